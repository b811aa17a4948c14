"""``cinema up``'s pure parts: the grace period it shares with the services, and the one
line it shows when a process fails to start."""

from __future__ import annotations

import io
import json
import os
import pathlib
import socket
import sys

import pytest
from sqlalchemy import exc

from services import launcher
from services.common.server import describe_database_error
from services.common.settings import Settings, SettingsError
from tests.support.processes import free_port


def record(level: str, message: str) -> str:
    return json.dumps(
        {"time": "2026-12-03T08:00:00+00:00", "level": level, "logger": "x", "message": message}
    )


def test_the_sigkill_delay_follows_cinema_grace_seconds() -> None:
    assert launcher.grace_seconds_from_env({}) == launcher.DEFAULT_GRACE_SECONDS == 10.0
    assert launcher.grace_seconds_from_env({"CINEMA_GRACE_SECONDS": "3"}) == 3.0
    assert launcher.sigkill_delay(3.0) == 3.0 + launcher._EXIT_MARGIN_SECONDS
    assert launcher.sigkill_delay(0.0) > 0, "even without grace a child gets a moment to exit"
    assert launcher.Options().grace_seconds == launcher.DEFAULT_GRACE_SECONDS


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_a_bad_grace_period_is_refused_as_the_services_refuse_it(value: str) -> None:
    with pytest.raises(SettingsError, match="CINEMA_GRACE_SECONDS") as by_launcher:
        launcher.grace_seconds_from_env({"CINEMA_GRACE_SECONDS": value})
    with pytest.raises(SettingsError) as by_service:
        Settings.from_env(
            "movie",
            {"CINEMA_GRACE_SECONDS": value, "CINEMA_JWT_PUBLIC_KEY": "-----BEGIN x"},
        )
    assert str(by_launcher.value) == str(by_service.value)


def test_the_cause_is_the_last_error_record() -> None:
    lines = [
        record("INFO", "user schema migrated from an empty database"),
        record("ERROR", "configuration error: CINEMA_ADMIN_PASSWORD must be at least 8 characters"),
        record("INFO", "something after it"),
    ]
    assert launcher.failure_cause(lines) == (
        "configuration error: CINEMA_ADMIN_PASSWORD must be at least 8 characters"
    )


def test_the_cause_of_a_traceback_is_its_last_line() -> None:
    lines = [
        record("INFO", "starting"),
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection failed",
        "",
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)",
    ]
    assert launcher.failure_cause(lines) == (
        "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection failed"
    )


def test_the_cause_from_envoy_and_plain_output() -> None:
    envoy = [
        "[2026-12-03 08:00:00.000][1][critical][main] [source/server/server.cc:1] "
        "error initializing config '/x/envoy.yaml': bad",
        "[2026-12-03 08:00:00.001][1][info][main] exiting",
    ]
    assert launcher.failure_cause(envoy) == "error initializing config '/x/envoy.yaml': bad"
    printed = [record("INFO", "x"), "cinema: configuration error: DATABASE_URL must be ..."]
    assert (
        launcher.failure_cause(printed) == "cinema: configuration error: DATABASE_URL must be ..."
    )
    assert launcher.failure_cause([record("INFO", "fine"), '{"grpcPort": 1}']) is None
    assert launcher.failure_cause([]) is None


def dbapi_error(text: str) -> exc.DBAPIError:
    return exc.OperationalError("SELECT 1", {}, Exception(text))


def test_database_errors_read_as_one_line() -> None:
    missing = dbapi_error(
        'connection to server at "127.0.0.1", port 5432 failed: '
        'FATAL:  database "movie_db" does not exist\n'
    )
    assert describe_database_error(missing) == (
        'PostgreSQL at 127.0.0.1:5432: database "movie_db" does not exist'
    )
    refused = dbapi_error(
        'connection to server at "localhost" (127.0.0.1), port 5433 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
    )
    assert describe_database_error(refused) == "PostgreSQL at localhost:5433: Connection refused"
    psycopg3 = dbapi_error(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        'FATAL:  role "nobody" does not exist'
    )
    assert describe_database_error(psycopg3) == (
        'PostgreSQL at 127.0.0.1:5432: role "nobody" does not exist'
    )
    other = dbapi_error("permission denied for schema public\nLINE 1: CREATE TABLE ...")
    assert describe_database_error(other) == "permission denied for schema public"


def test_a_running_process_is_judged_by_its_error_records_only() -> None:
    lines = [record("ERROR", "unexpected error in /x"), "some plain output"]
    assert launcher.failure_cause(lines, records_only=True) == "unexpected error in /x"
    assert launcher.failure_cause(lines) == "some plain output"


def test_a_child_that_fails_is_told_by_this_runs_lines_only(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "movie-1.log"
    log.write_text(record("ERROR", "the previous run's error") + "\n")
    script = (
        "import json, sys; print(json.dumps({'level': 'INFO', 'message': 'starting'})); sys.exit(3)"
    )
    child = launcher.Child("movie-1", [sys.executable, "-c", script], dict(os.environ), log)
    child.start()
    assert child.process is not None
    child.process.wait(timeout=30)
    assert child.failure("did not start") == f"movie-1 did not start: exit status 3; see {log}"

    script = "import sys; sys.exit('cinema: configuration error: CINEMA_X is wrong')"
    child.argv = [sys.executable, "-c", script]
    child.start()
    assert child.process is not None
    child.process.wait(timeout=30)
    assert child.failure("exited") == (
        f"movie-1 exited: cinema: configuration error: CINEMA_X is wrong; see {log}"
    )


def test_the_public_and_admin_ports_are_held_until_envoy_starts(tmp_path: pathlib.Path) -> None:
    # The children bind port 0 while the launcher starts them: the kernel must not hand
    # one of them the port Envoy is about to bind (a replica took the admin port once).
    ports = [free_port(), free_port()]
    options = launcher.Options(port=ports[0], admin_port=ports[1], data_dir=tmp_path)
    system = launcher.System(options, out=io.StringIO())
    system._reserve_ports()
    try:
        for port in ports:
            with socket.socket() as child:
                # As gRPC binds: SO_REUSEADDR and SO_REUSEPORT do not get past the hold.
                child.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                child.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                with pytest.raises(OSError, match="in use"):
                    child.bind(("127.0.0.1", port))
    finally:
        system._release_ports()
    for port in ports:  # ... and free again for Envoy
        with socket.socket() as envoy:
            envoy.bind(("127.0.0.1", port))


def test_a_port_left_in_time_wait_by_a_stopped_system_can_be_held(tmp_path: pathlib.Path) -> None:
    # The server side closes first (as Envoy does at stop): its end stays in TIME_WAIT.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
    client.close()
    options = launcher.Options(port=port, admin_port=0, data_dir=tmp_path)
    system = launcher.System(options, out=io.StringIO())
    system._reserve_ports()  # no "Address already in use": Envoy could bind it too
    system._release_ports()


def test_the_user_service_mails_into_the_data_dir_unless_told_otherwise(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = launcher.Options(port=18080, admin_port=19901, data_dir=tmp_path)
    system = launcher.System(options, out=io.StringIO())
    for unset in (None, ""):  # an empty variable reads as unset, as the services read it
        if unset is None:
            monkeypatch.delenv("CINEMA_MAIL_URL", raising=False)
        else:
            monkeypatch.setenv("CINEMA_MAIL_URL", unset)
        env = system._service_env("user", tmp_path / "keys")
        assert env["CINEMA_MAIL_URL"] == f"file://{tmp_path.resolve() / 'mail'}"
        assert env["CINEMA_PUBLIC_URL"] == "http://localhost:18080"
        assert f"mail:    {tmp_path.resolve() / 'mail'} (registration links" in system.banner()
    monkeypatch.setenv("CINEMA_MAIL_URL", "smtp://mail.example:25")
    assert system._service_env("user", tmp_path / "keys")["CINEMA_MAIL_URL"] == (
        "smtp://mail.example:25"
    )
    assert "sent through CINEMA_MAIL_URL" in system.banner()
