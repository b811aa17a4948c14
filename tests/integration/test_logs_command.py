"""``cinema logs`` as a user runs it: on log files laid out as ``cinema up`` writes them,
the history in readable lines, then following them until Ctrl-C."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import threading

from tests.support.processes import tool


def service_record(service: str, second: int, message: str, **extra: str) -> str:
    return json.dumps(
        {
            "time": f"2026-12-03T08:00:{second:02d}.250000+00:00",
            "level": extra.pop("level", "INFO"),
            "service": service,
            "logger": "services.common.server",
            "message": message,
            **extra,
        }
    )


def access_record(second: int, path: str, status: int) -> str:
    return json.dumps(
        {
            "time": f"2026-12-03T08:00:{second:02d}.500Z",
            "method": "GET",
            "path": path,
            "rpc": "/cinema.v1.MovieService/ListMovies",
            "status": status,
            "grpc_status": 0,
            "flags": "-",
            "duration_ms": 4,
            "attempts": 1,
        }
    )


def lay_out_logs(data_dir: pathlib.Path) -> pathlib.Path:
    logs = data_dir / "logs"
    logs.mkdir(parents=True)
    (logs / "movie-1.log").write_text(
        "\n".join(service_record("movie", s, f"movie one {s}") for s in (1, 4, 7)) + "\n"
    )
    (logs / "movie-2.log").write_text(
        "\n".join(service_record("movie", s, f"movie two {s}") for s in (2, 5)) + "\n"
    )
    (logs / "cast-1.log").write_text(
        service_record("cast", 3, "cast failed", level="ERROR", exception="Traceback\nKeyError: 1")
        + "\n"
    )
    (logs / "envoy.log").write_text(access_record(6, "/api/v1/movies", 200) + "\n")
    return logs


def cinema_logs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("cinema"), "logs", *args], capture_output=True, text=True, timeout=30
    )


def test_history_of_everything_in_time_order(tmp_path: pathlib.Path) -> None:
    lay_out_logs(tmp_path)
    result = cinema_logs("--data-dir", str(tmp_path), "-n", "5", "--no-follow")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The last five records over all files, oldest first; the exception below its record.
    assert [line[13:].split()[0] for line in lines if not line.startswith(" ")] == [
        "cast-1",
        "movie-1",
        "movie-2",
        "envoy",
        "movie-1",
    ]
    assert "cast-1   ERROR   services.common.server: cast failed" in lines[0]
    assert lines[1:3] == ["    Traceback", "    KeyError: 1"]
    assert any(
        line.endswith("envoy    INFO    access: GET /api/v1/movies -> MovieService/ListMovies "
                      "200 4ms")
        for line in lines
    )  # fmt: skip
    assert lines[-1].endswith("movie-1  INFO    services.common.server: movie one 7")


def test_one_service_or_one_replica(tmp_path: pathlib.Path) -> None:
    lay_out_logs(tmp_path)
    movie = cinema_logs("movie", "--data-dir", str(tmp_path), "--no-follow", "-n", "100")
    assert [line.rsplit(": ", 1)[1] for line in movie.stdout.splitlines()] == [
        "movie one 1",
        "movie two 2",
        "movie one 4",
        "movie two 5",
        "movie one 7",
    ]
    replica = cinema_logs("movie-2", "--data-dir", str(tmp_path), "--no-follow")
    assert [line.rsplit(": ", 1)[1] for line in replica.stdout.splitlines()] == [
        "movie two 2",
        "movie two 5",
    ]
    unknown = cinema_logs("popcorn", "--data-dir", str(tmp_path), "--no-follow")
    assert unknown.returncode == 2
    assert "popcorn" in unknown.stderr and "Traceback" not in unknown.stderr
    nowhere = cinema_logs("--data-dir", str(tmp_path / "missing"), "--no-follow")
    assert nowhere.returncode == 1
    assert "no logs in" in nowhere.stderr and "Traceback" not in nowhere.stderr


def test_follow_survives_a_restart_and_ctrl_c_ends_it(tmp_path: pathlib.Path) -> None:
    logs = lay_out_logs(tmp_path)
    process = subprocess.Popen(
        [tool("cinema"), "logs", "--data-dir", str(tmp_path), "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    arrived = threading.Condition()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with arrived:
                seen.append(line.rstrip("\n"))
                arrived.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_for(text: str) -> None:
        with arrived:
            assert arrived.wait_for(lambda: any(text in line for line in seen), timeout=20), (
                f"{text!r} never came; got {seen}"
            )

    try:
        wait_for("movie one 7")  # the history: one line
        with (logs / "movie-2.log").open("a") as handle:
            handle.write(service_record("movie", 8, "appended") + "\n")
        wait_for("appended")
        # A restart on a new data directory: the file is replaced, a new process appears.
        (logs / "movie-1.log").unlink()
        (logs / "movie-1.log").write_text(service_record("movie", 9, "after restart") + "\n")
        (logs / "order-1.log").write_text(service_record("order", 10, "a new replica") + "\n")
        wait_for("after restart")
        wait_for("a new replica")
        (logs / "movie-2.log").write_text(service_record("movie", 11, "truncated") + "\n")
        wait_for("truncated")
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=10)
        reader.join(5)
    assert code == 0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()
    assert not any("movie one 4" in line for line in seen), "history is the last line only"
