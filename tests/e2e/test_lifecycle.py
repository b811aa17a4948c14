"""``cinema up`` as an operator uses it: a second system beside the first, a clean stop,
data that survives a restart, and PostgreSQL when database URLs are given."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    RunningSystem,
    start_system,
    stop_system,
)
from tests.support.postgres import require_server


def nothing_listens_on(port: int) -> bool:
    # Connect rather than bind: a closed connection may sit in TIME_WAIT for a minute, which
    # blocks a plain bind but not a server (they all set SO_REUSEADDR).
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def create_cast(system: RunningSystem, name: str) -> str:
    token = system.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    reply = system.request("POST", "/api/v1/casts", {"name": name}, token=token)
    assert reply.status == 200, reply
    return str(reply.body["id"])


def test_second_system_stop_and_restart_keep_data(
    system: RunningSystem, tmp_path: pathlib.Path
) -> None:
    data_dir = tmp_path / "second"
    second = start_system(data_dir, replicas=1)
    try:
        assert second.port != system.port
        cast_id = create_cast(second, "Survivor")
        assert system.request("GET", f"/api/v1/casts/{cast_id}").status == 404, (
            "two systems share nothing"
        )
        ports = [second.port, second.admin_port] + [
            port for p in second.state()["processes"] for port in p["ports"]
        ]
    finally:
        survivors = stop_system(second)
    assert survivors == [], f"processes left behind: {survivors}"
    assert [p for p in ports if not nothing_listens_on(p)] == [], "ports left behind"
    assert system.request("GET", "/healthz").status == 200, "the first system is unaffected"

    again = start_system(data_dir, replicas=1)
    try:
        reply = again.request("GET", f"/api/v1/casts/{cast_id}")
        assert reply.status == 200
        assert reply.body["name"] == "Survivor"
    finally:
        assert stop_system(again) == []


@pytest.fixture
def postgres_urls() -> Iterator[dict[str, str]]:
    server = require_server()
    with contextlib.ExitStack() as stack:
        yield {
            service: stack.enter_context(server.fresh_database(f"up_{service}"))
            for service in ("movie", "cast", "user", "order")
        }


def test_database_urls_run_the_system_on_postgresql(
    tmp_path: pathlib.Path, postgres_urls: dict[str, str]
) -> None:
    env = {f"{service.upper()}_DATABASE_URL": url for service, url in postgres_urls.items()}
    running = start_system(tmp_path / "pg", replicas=1, extra_env=env)
    try:
        assert any("PostgreSQL" in line for line in running.output)
        name = f"On PostgreSQL {uuid.uuid4().hex[:6]}"
        cast_id = create_cast(running, name)
        assert running.request("GET", f"/api/v1/casts/{cast_id}").body["name"] == name
        assert not list((tmp_path / "pg" / "db").glob("*.db")), "no SQLite file was used"
    finally:
        assert stop_system(running) == []
