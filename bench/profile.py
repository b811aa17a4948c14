"""py-spy profiles of a server process under load, summarised as top frames.

``py-spy record --gil --format raw`` samples only the thread that holds the GIL, which in
a CPython server is where the CPU goes (threads waiting on PostgreSQL or on the work queue
do not hold it). The raw format is one line per distinct stack, ``frame;frame;... count``;
:func:`summarise` turns it into the share of samples per frame, by *self* (the innermost
frame: where the time is spent) and *inclusive* (anywhere on the stack: who asked for it).

Profiles are taken in runs of their own, after the measured runs, because sampling costs
the machine CPU that the measured runs must not lose.
"""

from __future__ import annotations

import collections
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FrameShare:
    """A frame and the share (0..1) of samples it accounts for."""

    frame: str
    share: float


@dataclass(frozen=True)
class ProfileSummary:
    """The top frames of one profile, and how the samples split between threads."""

    samples: int
    self_time: list[FrameShare]
    inclusive: list[FrameShare]
    #: Share of samples on the thread that drives gRPC's completion queue: the asyncio
    #: event loop of a grpc.aio server, or the polling thread of grpcio's sync server.
    event_loop: float = 0.0
    #: Share of samples on worker threads (the sync server's calls, or the use cases a
    #: grpc.aio server runs in ``asyncio.to_thread``).
    worker_threads: float = 0.0


#: Frames at the bottom of every stack of their thread: they say nothing about the cost.
_PLUMBING = (
    "<module> ",
    "main (services/cli.py",
    "run (asyncio/runners.py",
    "Runner.run ",
    "BaseEventLoop.run_forever ",
    "BaseEventLoop.run_until_complete ",
    "Thread._bootstrap",
    "Thread.run ",
    "_worker (concurrent/futures/thread.py",
    "_WorkItem.run ",
    "_run_module_as_main ",
    "_run_code ",
)


#: A frame that marks the thread driving gRPC's completion queue.
_TRANSPORT_THREAD = ("BaseEventLoop.run_forever ", "_serve (grpc/_server.py")


def available() -> str | None:
    """The path of py-spy, if it is installed."""
    # Beside this interpreter first: the venv's bin need not be on PATH.
    beside = pathlib.Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def start_recording(
    pid: int, seconds: float, output: pathlib.Path, *, rate: int = 250
) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` for ``seconds`` (GIL holder only, raw stacks to ``output``)."""
    py_spy = available()
    if py_spy is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(output),
            "--gil",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise(lines: Iterable[str], *, top: int = 15) -> ProfileSummary:
    """Top frames by self and inclusive share from py-spy's raw format."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = loop = workers = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if any(f.startswith(_TRANSPORT_THREAD) for f in frames):
            loop += count
        elif any(f.startswith("Thread._bootstrap") for f in frames):
            workers += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    if total == 0:
        return ProfileSummary(0, [], [])

    def shares(counter: collections.Counter[str], count: int) -> list[FrameShare]:
        return [FrameShare(frame, n / total) for frame, n in counter.most_common(count)]

    inclusive = [f for f in shares(anywhere, top + 30) if not f.frame.startswith(_PLUMBING)][:top]
    return ProfileSummary(total, shares(own, top), inclusive, loop / total, workers / total)


def summarise_file(path: pathlib.Path, *, top: int = 15) -> ProfileSummary:
    """:func:`summarise` of a raw file (an empty summary when py-spy wrote nothing)."""
    try:
        with path.open() as raw:
            return summarise(raw, top=top)
    except OSError:
        return ProfileSummary(0, [], [])
