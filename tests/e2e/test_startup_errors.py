"""``cinema up`` for a newcomer: a missing PostgreSQL database is created; anything that
stops the start ends in one line that names the cause and the log to read, without a
traceback; an idle system stops in well under its grace period and says so."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.e2e.conftest import ADMIN_EMAIL, start_system
from tests.support.postgres import PostgresServer, require_server
from tests.support.processes import free_port, tool


def run_up(
    data_dir: pathlib.Path, env: Mapping[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``cinema up`` that is expected to fail: stdout and stderr as the terminal shows them."""
    return subprocess.run(
        [tool("cinema"), "up", "--port", str(free_port()), "--admin-port", str(free_port()),
         "--replicas", "1", "--data-dir", str(data_dir), *args],
        env={**os.environ, "CINEMA_ARGON2_TIME_COST": "1", "CINEMA_ARGON2_MEMORY_KIB": "1024",
             "CINEMA_ARGON2_PARALLELISM": "1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180,
    )  # fmt: skip


def last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_line_failure(result: subprocess.CompletedProcess[str], log: pathlib.Path) -> str:
    """The failure is the last line, the only one that says ``cinema up:``, with its log."""
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    line = last_line(result.stdout)
    assert line.startswith("cinema up: "), result.stdout
    assert result.stdout.count("cinema up:") == 1, result.stdout
    assert line.endswith(f"see {log}"), line
    assert log.exists(), "the log named is there to read"
    return line


def execute(server: PostgresServer, statement: str) -> None:
    engine = create_engine(server.url("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(statement))


@pytest.mark.postgres
def test_a_missing_database_is_created_and_an_idle_stop_is_quick(tmp_path: pathlib.Path) -> None:
    server = require_server()
    name = f"cinema_test_created_{uuid.uuid4().hex[:10]}"
    env = {"MOVIE_DATABASE_URL": server.url(name), "CINEMA_GRACE_SECONDS": "10"}
    try:
        running = start_system(tmp_path / "up", replicas=1, extra_env=env)
        try:
            output = "".join(running.output)
            assert f"created database {name} for movie" in output
            assert running.request("GET", "/api/v1/movies").status == 200
        finally:
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            code = running.process.wait(timeout=60)
            took = time.monotonic() - started
        assert code == 0
        assert took < 3.0, f"an idle system took {took:.1f}s to stop (grace is 10s)"
        for _ in range(50):  # the reader thread may still be taking the last lines
            if running.output and running.output[-1].startswith("Cinema stopped"):
                break
            time.sleep(0.05)
        assert running.output[-1].startswith("Cinema stopped"), running.output[-5:]
        assert "Traceback" not in "".join(running.output)
    finally:
        execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_a_database_the_role_may_not_create_is_named_with_its_command(
    tmp_path: pathlib.Path,
) -> None:
    server = require_server()
    role = f"cinema_test_role_{uuid.uuid4().hex[:8]}"
    name = f"cinema_test_absent_{uuid.uuid4().hex[:10]}"
    execute(server, f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        url = f"postgresql+psycopg2://{role}@{server.host}:{server.port}/{name}"
        result = run_up(tmp_path, {}, "--database-url", f"movie={url}")
        line = assert_one_line_failure(result, tmp_path.resolve() / "logs" / "launcher.log")
        assert f'database "{name}" does not exist' in line
        assert f'role "{role}" may not create it' in line
        assert f"createdb -h {server.host} -p {server.port} -U postgres -O {role} {name}" in line
    finally:
        execute(server, f'DROP ROLE IF EXISTS "{role}"')


def test_a_database_that_refuses_is_one_line(tmp_path: pathlib.Path) -> None:
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/cinema"
    result = run_up(tmp_path, {"CAST_DATABASE_URL": url})
    line = assert_one_line_failure(result, tmp_path.resolve() / "logs" / "launcher.log")
    assert "the cast database does not answer" in line
    assert "Connection refused" in line


def test_a_too_short_admin_password_is_one_line(tmp_path: pathlib.Path) -> None:
    env = {"CINEMA_ADMIN_EMAIL": ADMIN_EMAIL, "CINEMA_ADMIN_PASSWORD": "short"}
    result = run_up(tmp_path, env)
    line = assert_one_line_failure(result, tmp_path.resolve() / "logs" / "user-1.log")
    assert line.startswith(
        "cinema up: user-1 did not start: configuration error: CINEMA_ADMIN_PASSWORD must"
    ), line
    log = (tmp_path / "logs" / "user-1.log").read_text()
    assert "Context impl" not in log and "setup plugin" not in log, "Alembic's INFO stays out"


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_up(tmp_path, {}, "--admin-port", str(port))
    line = assert_one_line_failure(result, tmp_path.resolve() / "logs" / "launcher.log")
    assert f"--admin-port {port}: cannot listen on 127.0.0.1:{port}" in line
    assert "Address already in use" in line
    assert "started" not in result.stdout, "the port is checked before any process starts"
