"""``cinema serve`` at start: a database that is missing or refuses is one ERROR line that
names it and a non-zero exit, never a traceback; Alembic's narration stays out of the log."""

from __future__ import annotations

import json
import pathlib
import subprocess
import uuid
from typing import Any

import pytest

from tests.support.postgres import require_server
from tests.support.processes import free_port, start_cinema_serve, tool
from tests.support.tokens import SigningKeys


def serve_once(service: str, env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``cinema serve`` that is expected to stop at start: status, records, stderr."""
    result = subprocess.run(
        [tool("cinema"), "serve", service, "--host", "127.0.0.1", "--port", "0"],
        env={**env, "CINEMA_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return result.returncode, records, result.stderr


def errors(records: list[dict[str, Any]]) -> list[str]:
    return [str(r["message"]) for r in records if r["level"] == "ERROR"]


@pytest.mark.postgres
def test_a_missing_database_is_one_line(keys: SigningKeys) -> None:
    server = require_server()
    name = f"cinema_test_missing_{uuid.uuid4().hex[:10]}"
    code, records, stderr = serve_once("movie", {**keys.env(), "DATABASE_URL": server.url(name)})
    assert code == 1
    assert "Traceback" not in stderr
    (message,) = errors(records)
    assert message.startswith(
        f'database error: PostgreSQL at {server.host}:{server.port}: database "{name}" does not '
        "exist (DATABASE_URL postgresql+psycopg2://"
    ), message
    assert records[-1]["level"] == "ERROR", "the cause is the last line"


def test_a_refused_connection_is_one_line(keys: SigningKeys) -> None:
    url = f"postgresql+psycopg2://cinema:secret@127.0.0.1:{free_port()}/movie"
    code, records, stderr = serve_once("cast", {**keys.env(), "DATABASE_URL": url})
    assert code == 1
    assert "Traceback" not in stderr
    (message,) = errors(records)
    assert "Connection refused" in message
    assert "secret" not in stderr, "the password never reaches the log"


def test_a_bad_setting_found_while_building_is_one_line(
    keys: SigningKeys, tmp_path: pathlib.Path
) -> None:
    env = {
        **keys.env(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'user.db'}",
        "CINEMA_ADMIN_EMAIL": "root@cinema.test",
        "CINEMA_ADMIN_PASSWORD": "short",
    }
    code, records, stderr = serve_once("user", env)
    assert code == 2
    assert "Traceback" not in stderr
    (message,) = errors(records)
    assert message.startswith("configuration error: CINEMA_ADMIN_PASSWORD must"), message
    assert records[-1]["level"] == "ERROR"


def test_alembic_says_nothing_at_info(keys: SigningKeys, tmp_path: pathlib.Path) -> None:
    process = start_cinema_serve(
        "cast", {**keys.env(), "DATABASE_URL": f"sqlite:///{tmp_path / 'cast.db'}"}
    )
    assert process.terminate() == 0
    records = [json.loads(line) for line in process.log if line.startswith("{")]
    assert not [r for r in records if str(r["logger"]).startswith("alembic")]
    assert any("schema migrated from an empty database" in r["message"] for r in records)
