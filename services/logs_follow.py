"""``cinema logs``: the logs of ``cinema up``, readable, then followed.

``cinema up`` writes one file per process in ``DATA_DIR/logs``: ``movie-1.log`` and the
other replicas (one JSON record per line, :mod:`services.common.logs`), ``sidecar.log``
(the same), ``launcher.log`` (the launcher's own messages, the same) and ``envoy.log``
(Envoy's access log, JSON as ``gateway.envoy_config`` defines it, and Envoy's own warnings
in its text format). Each becomes one line::

    08:26:19.462 movie-1  INFO    services.common.server: cinema.v1.MovieService is SERVING
    08:26:19.470 envoy    INFO    access: GET /api/v1/movies -> MovieService/ListMovies 200 3ms

with the local time, the process (the file's name), the level, the logger and the message,
and an exception's text indented below it. Anything else in a file (what a process
printed outside its logger) is shown as it is.

First the last ``lines`` records of the chosen files, merged in time order, then, unless
``follow`` is off, what the files gain, like ``tail -F``: a file that is truncated or
replaced (a new data directory, a restart) is read again from its start, and a process
whose log appears later (a replica added) is picked up. Ctrl-C ends it with status 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import pathlib
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from services.common.settings import SERVICES

# Processes of `cinema up` besides the replicas (each has DATA_DIR/logs/NAME.log).
OTHER_PROCESSES = ("envoy", "sidecar", "trace-store", "launcher")
LEVEL_WIDTH = len("WARNING")
_MIN_NAME_WIDTH = len("launcher")
_READ_CHUNK = 1 << 20
# Envoy's own log lines: "[2026-01-02 03:04:05.678][123][warning][main] [file.cc:1] text".
_ENVOY_LINE = re.compile(
    r"^\[(?P<time>[^\]]+)\]\[\d+\]\[(?P<level>\w+)\]\[(?P<logger>[\w-]+)\] "
    r"(?:\[[^\]]*\] )?(?P<message>.*)$"
)
_GRPC_CODES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One log record of one process, ready to print."""

    time: dt.datetime | None
    process: str
    level: str = ""
    logger: str = ""
    message: str = ""
    exception: str | None = None


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    # Envoy's text lines carry local time without a zone; astimezone() reads them so.
    return parsed.astimezone()


def summarise_access(record: dict[str, Any]) -> str:
    """One of Envoy's JSON access-log records as ``METHOD PATH [-> RPC] STATUS [gRPC
    status] [flags] [attempts] DURATION``: ``GET /api/v1/movies -> MovieService/ListMovies
    200 3ms`` for a JSON call, ``POST /cinema.v1.MovieService/GetMovie 200 NOT_FOUND 1ms``
    for a gRPC one."""
    method = str(record.get("method") or "-")
    path = str(record.get("path") or "-")
    parts = [method, path]
    rpc = record.get("rpc")
    if isinstance(rpc, str) and rpc and rpc != path and not path.startswith(rpc):
        parts.append("-> " + rpc.removeprefix("/").removeprefix("cinema.v1."))
    parts.append(str(record.get("status", "-")))
    # Only a call that stayed gRPC has a gRPC status of its own: for a transcoded JSON call
    # Envoy derives one from the HTTP status (404 reads UNIMPLEMENTED), which misleads.
    grpc_status = record.get("grpc_status")
    if rpc == path and isinstance(grpc_status, int) and 0 <= grpc_status < len(_GRPC_CODES):
        parts.append(_GRPC_CODES[grpc_status])
    flags = record.get("flags")
    if flags and flags != "-":
        parts.append(str(flags))
    attempts = record.get("attempts")
    if isinstance(attempts, int) and attempts > 1:
        parts.append(f"{attempts} attempts")
    duration = record.get("duration_ms")
    parts.append(f"{duration}ms" if duration not in (None, "", "-") else "-")
    return " ".join(parts)


def parse_line(process: str, line: str) -> Entry:
    """One line of ``process``'s log file as an :class:`Entry` (its time may be None)."""
    text = line.rstrip("\r\n")
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict):
        if "message" in record and "level" in record:
            exception = record.get("exception")
            return Entry(
                time=_parse_time(record.get("time")),
                process=process,
                level=str(record["level"]).upper(),
                logger=str(record.get("logger") or ""),
                message=str(record["message"]),
                exception=str(exception) if exception else None,
            )
        if "status" in record and ("path" in record or "method" in record):
            return Entry(
                time=_parse_time(record.get("time")),
                process=process,
                level="INFO",
                logger="access",
                message=summarise_access(record),
            )
    envoy = _ENVOY_LINE.match(text)
    if envoy:
        return Entry(
            time=_parse_time(envoy.group("time")),
            process=process,
            level=envoy.group("level").upper(),
            logger=envoy.group("logger"),
            message=envoy.group("message"),
        )
    return Entry(time=None, process=process, message=text)


def _clock(time: dt.datetime | None) -> str:
    if time is None:
        return " " * len("00:00:00.000")
    return f"{time:%H:%M:%S}.{time.microsecond // 1000:03d}"


def format_entry(entry: Entry, name_width: int = _MIN_NAME_WIDTH) -> str:
    """``HH:MM:SS.mmm process level logger: message``; further lines of the message and an
    exception's text indented below it."""
    head = f"{_clock(entry.time)} {entry.process:<{name_width}} {entry.level:<{LEVEL_WIDTH}}"
    first, *rest = entry.message.splitlines() or [""]
    body = f"{entry.logger}: {first}" if entry.logger else first
    lines = [f"{head} {body}".rstrip(), *(f"    {line}" for line in rest)]
    if entry.exception:
        lines.extend(f"    {line}" for line in entry.exception.rstrip().splitlines())
    return "\n".join(lines)


def selects(selector: str | None, process: str) -> bool:
    """Whether ``cinema logs SELECTOR`` shows ``process``: everything for None, a service's
    replicas for its name (``movie``: ``movie-1``, ``movie-2``), else that process."""
    if selector is None or selector == process:
        return True
    return selector in SERVICES and re.fullmatch(rf"{re.escape(selector)}-\d+", process) is not None


def known_selector(selector: str) -> bool:
    """A name ``cinema up`` uses for a service or one of its processes."""
    if selector in SERVICES or selector in OTHER_PROCESSES:
        return True
    replica = re.fullmatch(r"(?P<service>[a-z]+)-\d+", selector)
    return replica is not None and replica.group("service") in SERVICES


def tail_lines(handle: IO[bytes], count: int) -> tuple[list[str], int]:
    """The last ``count`` complete lines of the open file, and the offset just after them
    (a line still being written is left for :meth:`LogFile.read_new`)."""
    end = os.fstat(handle.fileno()).st_size
    data = b""
    position = end
    while position > 0 and data.count(b"\n") <= count:
        step = min(64 * 1024, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    complete, newline, partial = data.rpartition(b"\n")
    offset = end - len(partial) if newline else end - len(data)
    lines = complete.split(b"\n") if newline else []
    if position > 0:
        lines = lines[1:]  # the first may be the end of a line that started before
    chosen = lines[-count:] if count > 0 else []
    return [raw.decode(errors="replace") for raw in chosen], offset


class LogFile:
    """One followed log file. It stays open, as ``tail -F`` keeps it: so a file put in its
    place (a new data directory) cannot reuse its inode unnoticed."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.process = path.stem
        self._handle: IO[bytes] | None = None
        self._offset = 0
        self._partial = b""
        self._last_time: dt.datetime | None = None

    def _entry(self, line: str) -> Entry:
        entry = parse_line(self.process, line)
        if entry.time is None and self._last_time is not None:
            # A line without a time of its own (a process's plain output): the record's
            # before it is the best guess, and keeps it in place when merged.
            return dataclasses.replace(entry, time=self._last_time)
        if entry.time is not None:
            self._last_time = entry.time
        return entry

    def _open(self) -> IO[bytes] | None:
        """The open file, reopened (from its start) when the path now names another."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return self._handle  # deleted: finish what it had; a new one is read afresh
        if self._handle is not None:
            held = os.fstat(self._handle.fileno())
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                return self._handle
            self.close()
        try:
            self._handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        self._offset, self._partial = 0, b""
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def history(self, count: int) -> list[Entry]:
        """The last ``count`` lines; following continues after them."""
        handle = self._open()
        if handle is None:
            return []
        lines, self._offset = tail_lines(handle, count)
        return [self._entry(line) for line in lines]

    def read_new(self) -> list[Entry]:
        """The complete lines written since the last read; from the start again when the
        file was truncated or replaced."""
        handle = self._open()
        if handle is None:
            return []
        if os.fstat(handle.fileno()).st_size < self._offset:  # truncated
            self._offset, self._partial = 0, b""
        handle.seek(self._offset)
        data = handle.read(_READ_CHUNK)
        if not data:
            return []
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [self._entry(raw.decode(errors="replace")) for raw in complete]


def _merged(entries: Iterable[Entry]) -> list[Entry]:
    earliest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(entries, key=lambda entry: entry.time or earliest)  # stable: file order


class LogFollower:
    """What ``cinema logs`` shows: the files of ``selector`` in ``logs_dir``."""

    def __init__(self, logs_dir: pathlib.Path, selector: str | None) -> None:
        self.logs_dir = logs_dir
        self.selector = selector
        self.files: dict[pathlib.Path, LogFile] = {}

    def _discover(self) -> list[LogFile]:
        """Files of the selection that appeared since the last look."""
        found = []
        for path in sorted(self.logs_dir.glob("*.log")):
            if path not in self.files and selects(self.selector, path.stem):
                self.files[path] = LogFile(path)
                found.append(self.files[path])
        return found

    def name_width(self) -> int:
        return max([_MIN_NAME_WIDTH, *(len(f.process) for f in self.files.values())])

    def history(self, count: int) -> list[Entry]:
        """The last ``count`` records over every file of the selection, in time order."""
        entries = [entry for log in self._discover() for entry in log.history(count)]
        return _merged(entries)[-count:] if count > 0 else []

    def poll(self) -> list[Entry]:
        """What the files gained since the last call (new files from their start)."""
        self._discover()
        return _merged(entry for log in self.files.values() for entry in log.read_new())

    def close(self) -> None:
        for log in self.files.values():
            log.close()


def run(
    logs_dir: pathlib.Path,
    selector: str | None,
    *,
    lines: int = 10,
    follow: bool = True,
    out: IO[str] = sys.stdout,
    interval: float = 0.25,
    stop: threading.Event | None = None,
) -> None:
    """Print the history, then (``follow``) what comes, until ``stop`` is set or Ctrl-C."""
    follower = LogFollower(logs_dir, selector)
    for entry in follower.history(lines):
        print(format_entry(entry, follower.name_width()), file=out)
    out.flush()
    stop = stop or threading.Event()
    try:
        while follow and not stop.wait(interval):
            entries = follower.poll()
            for entry in entries:
                print(format_entry(entry, follower.name_width()), file=out)
            if entries:
                out.flush()
    finally:
        follower.close()


def main(
    data_dir: pathlib.Path,
    selector: str | None,
    *,
    lines: int = 10,
    follow: bool = True,
    err: IO[str] = sys.stderr,
) -> int:
    """``cinema logs``: its exit status (0, also after Ctrl-C; 1 when there is nothing to
    show; 2 for an unknown process)."""
    logs_dir = data_dir / "logs"
    if lines < 0:
        print("cinema logs: --lines must be 0 or more", file=err)
        return 2
    if not logs_dir.is_dir():
        print(
            f"cinema logs: no logs in {logs_dir}: `cinema up --data-dir {data_dir}` writes them",
            file=err,
        )
        return 1
    present = sorted(path.stem for path in logs_dir.glob("*.log"))
    if selector is not None and not known_selector(selector) and selector not in present:
        print(
            f"cinema logs: no process {selector!r}; give a service ({', '.join(SERVICES)}), "
            f"a replica (movie-1) or one of: {', '.join(present) or ', '.join(OTHER_PROCESSES)}",
            file=err,
        )
        return 2
    if not any(selects(selector, name) for name in present):
        print(f"cinema logs: no log of {selector or 'any process'} in {logs_dir} yet", file=err)
        if not follow:
            return 1
    try:
        run(logs_dir, selector, lines=lines, follow=follow)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (`cinema logs | head`): nothing left to say, and nothing to
        # flush into the closed pipe on the way out.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
