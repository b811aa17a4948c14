"""``cinema logs``: how each kind of line in ``cinema up``'s logs reads, which files a
selection shows, and following files that grow, are truncated or are replaced."""

from __future__ import annotations

import datetime as dt
import io
import json
import pathlib
import threading

from services import logs_follow
from services.logs_follow import Entry, LogFile, format_entry, parse_line

UTC_TIME = "2026-12-03T08:26:19.462205+00:00"


def local_clock(iso: str) -> str:
    """What the viewer prints for a UTC time, in this machine's zone."""
    moment = dt.datetime.fromisoformat(iso).astimezone()
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def service_line(message: str, *, level: str = "INFO", time: str = UTC_TIME, **extra: str) -> str:
    record = {
        "time": time,
        "level": level,
        "service": "movie",
        "logger": "services.common.server",
        "message": message,
        **extra,
    }
    return json.dumps(record)


def access_line(**fields: object) -> str:
    record: dict[str, object] = {
        "time": "2026-12-03T08:26:19.460Z",
        "request_id": "e3b0c442",
        "method": "GET",
        "path": "/api/v1/movies",
        "rpc": "/cinema.v1.MovieService/ListMovies",
        "protocol": "HTTP/1.1",
        "status": 200,
        "grpc_status": 0,
        "flags": "-",
        "details": "via_upstream",
        "duration_ms": 3,
        "route": "movie",
        "upstream_cluster": "movie",
        "upstream_host": "127.0.0.1:43533",
        "attempts": 1,
        "bytes_received": 0,
        "bytes_sent": 12,
        "client": "127.0.0.1",
        "user_agent": "curl/8.5.0",
    }
    record.update(fields)
    return json.dumps(record)


def test_a_service_record_reads_time_process_level_logger_message() -> None:
    entry = parse_line("movie-1", service_line("cinema.v1.MovieService is SERVING"))
    assert format_entry(entry) == (
        f"{local_clock(UTC_TIME)} movie-1  INFO    "
        "services.common.server: cinema.v1.MovieService is SERVING"
    )


def test_an_exception_is_indented_below_its_record() -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'
    entry = parse_line("order-2", service_line("call failed", level="ERROR", exception=trace))
    lines = format_entry(entry).splitlines()
    assert lines[0].endswith("order-2  ERROR   services.common.server: call failed")
    assert lines[1:] == [
        "    Traceback (most recent call last):",
        '      File "x.py", line 1',
        "    ValueError: boom",
    ]


def test_envoys_access_log_is_summarised() -> None:
    entry = parse_line("envoy", access_line())
    assert entry.logger == "access"
    assert entry.message == "GET /api/v1/movies -> MovieService/ListMovies 200 3ms"
    assert format_entry(entry) == (
        f"{local_clock('2026-12-03T08:26:19.460+00:00')} envoy    INFO    "
        "access: GET /api/v1/movies -> MovieService/ListMovies 200 3ms"
    )


def test_access_log_of_grpc_calls_errors_and_retries() -> None:
    native = parse_line(
        "envoy",
        access_line(
            method="POST",
            path="/cinema.v1.MovieService/GetMovie",
            rpc="/cinema.v1.MovieService/GetMovie",
            grpc_status=5,
            duration_ms=1,
        ),
    )
    assert native.message == "POST /cinema.v1.MovieService/GetMovie 200 NOT_FOUND 1ms"
    unhealthy = parse_line(
        "envoy",
        access_line(status=503, grpc_status=None, flags="UH", attempts=2, duration_ms=0),
    )
    assert unhealthy.message == (
        "GET /api/v1/movies -> MovieService/ListMovies 503 UH 2 attempts 0ms"
    )
    # Envoy derives a gRPC status from a transcoded call's HTTP status (404 -> 12): not shown.
    transcoded = parse_line(
        "envoy", access_line(path="/api/v1/movies/x", status=404, grpc_status=12)
    )
    assert transcoded.message == "GET /api/v1/movies/x -> MovieService/ListMovies 404 3ms"
    healthz = parse_line("envoy", access_line(path="/healthz", rpc="/healthz", grpc_status=None))
    assert healthz.message == "GET /healthz 200 3ms"


def test_envoys_own_lines_and_plain_output() -> None:
    envoy = parse_line(
        "envoy",
        "[2026-12-03 08:26:19.460][10278][warning][main] "
        "[source/server/server.cc:1028] caught ENVOY_SIGTERM",
    )
    assert (envoy.level, envoy.logger, envoy.message) == ("WARNING", "main", "caught ENVOY_SIGTERM")
    assert envoy.time is not None
    assert format_entry(envoy).startswith("08:26:19.460 envoy    WARNING main: caught")

    plain = parse_line("user-1", "cinema: configuration error: CINEMA_ADMIN_PASSWORD ...\n")
    assert plain == Entry(
        None, "user-1", message="cinema: configuration error: CINEMA_ADMIN_PASSWORD ..."
    )
    ports = parse_line("sidecar", '{"grpcPort": 46129, "httpPort": 36075}')
    assert ports.message == '{"grpcPort": 46129, "httpPort": 36075}'
    assert (
        format_entry(ports, 8)
        == " " * 12 + ' sidecar          {"grpcPort": 46129, "httpPort": 36075}'
    )


def test_a_selection_is_everything_a_service_or_one_process() -> None:
    assert logs_follow.selects(None, "envoy")
    assert logs_follow.selects("movie", "movie-1")
    assert logs_follow.selects("movie", "movie-12")
    assert not logs_follow.selects("movie", "cast-1")
    assert not logs_follow.selects("movie-1", "movie-12")
    assert logs_follow.selects("envoy", "envoy")
    assert logs_follow.known_selector("order-3")
    assert logs_follow.known_selector("launcher")
    assert not logs_follow.known_selector("popcorn-1")


def test_history_merges_the_last_lines_of_each_file_in_time_order(tmp_path: pathlib.Path) -> None:
    (tmp_path / "movie-1.log").write_text(
        "\n".join(
            service_line(f"movie {i}", time=f"2026-12-03T08:00:0{i}+00:00") for i in range(0, 9, 2)
        )
        + "\n"
    )
    (tmp_path / "cast-1.log").write_text(
        "\n".join(
            service_line(f"cast {i}", time=f"2026-12-03T08:00:0{i}+00:00") for i in range(1, 9, 2)
        )
        + "\n"
    )
    follower = logs_follow.LogFollower(tmp_path, None)
    history = follower.history(3)
    assert [e.message for e in history] == ["movie 6", "cast 7", "movie 8"]
    only_movie = logs_follow.LogFollower(tmp_path, "movie").history(10)
    assert [e.message for e in only_movie] == [f"movie {i}" for i in range(0, 9, 2)]


def test_tail_lines_reads_large_files_from_the_end(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i:06d} {'x' * 100}\n" for i in range(5000)) + "half a li")
    with path.open("rb") as handle:
        lines, offset = logs_follow.tail_lines(handle, 3)
        assert [line.split()[1] for line in lines] == ["004997", "004998", "004999"]
        assert offset == path.stat().st_size - len("half a li"), "the unfinished line comes later"
        assert logs_follow.tail_lines(handle, 0)[0] == []
    empty = tmp_path / "empty.log"
    empty.write_text("")
    with empty.open("rb") as handle:
        assert logs_follow.tail_lines(handle, 5) == ([], 0)


def test_following_survives_growth_truncation_and_replacement(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "movie-1.log"
    path.write_text(service_line("old") + "\n")
    log = LogFile(path)
    assert [e.message for e in log.history(5)] == ["old"]
    assert log.read_new() == []

    with path.open("a") as handle:
        handle.write(service_line("grown") + "\n" + service_line("unfinished")[:20])
    assert [e.message for e in log.read_new()] == ["grown"]
    with path.open("a") as handle:
        handle.write(service_line("unfinished")[20:] + "\n")
    assert [e.message for e in log.read_new()] == ["unfinished"]

    path.write_text(service_line("after truncation") + "\n")  # shorter: truncated
    assert [e.message for e in log.read_new()] == ["after truncation"]

    path.unlink()
    assert log.read_new() == []
    replacement = tmp_path / "movie-1.log.new"
    replacement.write_text(service_line("a new file, longer than the one before it") + "\n" * 3)
    replacement.rename(path)  # same name, another file: read from its start
    assert [e.message for e in log.read_new() if e.message] == [
        "a new file, longer than the one before it"
    ]
    log.close()


def test_a_line_without_time_takes_the_time_of_the_record_before() -> None:
    log = LogFile(pathlib.Path("/nonexistent/user-1.log"))
    first = log._entry(service_line("migrating"))
    plain = log._entry("cinema: configuration error: bad")
    assert plain.time == first.time


def test_run_prints_history_then_what_comes(tmp_path: pathlib.Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "movie-1.log").write_text(service_line("before") + "\n")
    out = io.StringIO()
    stop = threading.Event()
    worker = threading.Thread(
        target=logs_follow.run,
        args=(logs, None),
        kwargs={"lines": 5, "out": out, "interval": 0.02, "stop": stop},
    )
    worker.start()
    try:
        (logs / "cast-1.log").write_text(service_line("a new process") + "\n")
        pause = threading.Event()
        for _ in range(250):
            if "a new process" in out.getvalue():
                break
            pause.wait(0.02)
    finally:
        stop.set()
        worker.join(5)
    text = out.getvalue()
    assert "movie-1  INFO    services.common.server: before" in text
    assert "cast-1   INFO    services.common.server: a new process" in text
