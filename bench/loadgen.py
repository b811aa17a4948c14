"""The load generator: several processes, each an asyncio loop, results merged.

Why processes: one Python process tops out near the rate a Python server reaches, so a
single client process would measure itself. ``processes`` workers (spawned, never forked:
grpc does not survive a fork) each run a share of the load; the parent synchronises
their start, then merges their histograms and status counts.

Two modes:

* **closed** (fixed concurrency): ``concurrency`` callers, each sending its next call as
  soon as the previous one answers. Gives the peak throughput. A call counts when it
  *completes* inside the measured window, so throughput is calls / window.
* **open** (fixed arrival rate): calls are due at ``start + i / rate`` whatever happened
  to earlier calls, and latency is measured from that *intended* time, not from when the
  generator got round to sending. A server that stalls therefore shows its stall in the
  latency of every call that should have been sent meanwhile (no coordinated omission).
  The workers' schedules interleave, so the merged arrivals are evenly spaced. How late
  the generator itself sent (``send lag``) is measured separately, so a late generator is
  visible rather than blamed on the server.

The first ``warmup`` seconds are run but not counted; every call has a deadline, and a
run ends at ``warmup + duration`` plus at most one deadline for calls in flight.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.connection
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bench.stats import LatencyHistogram, merge_counters, merge_histograms

Mode = Literal["closed", "open"]
BACKLOG = "client:backlog"
_START_MARGIN = 0.3  # seconds between "all ready" and the common start


class Operation(Protocol):
    """One scenario step as a worker runs it: a call (or a short sequence of calls)."""

    async def __call__(self, index: int) -> str:
        """Run call number ``index``; answer its status name (``"OK"`` on success)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class Scenario(Protocol):
    """What a worker process needs to build its :class:`Operation` (must pickle)."""

    @property
    def name(self) -> str:
        """The scenario's name, as the command line spells it."""
        ...

    async def open(self, worker: int, callers: int) -> Operation:
        """Connect (and check one call works) for ``callers`` concurrent callers."""
        ...


@dataclass(frozen=True)
class LoadPlan:
    """How much load, for how long."""

    mode: Mode = "closed"
    concurrency: int = 32
    rate: float = 0.0
    duration: float = 10.0
    warmup: float = 2.0
    processes: int = 2
    timeout: float = 5.0
    #: Open loop: calls outstanding per worker beyond which new calls are counted as
    #: ``client:backlog`` failures instead of sent (bounds memory when the server stalls).
    max_in_flight: int = 5000

    def __post_init__(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode must be closed or open, got {self.mode!r}")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("closed loop needs --concurrency >= 1")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("open loop needs --rate > 0")
        if not 0 < self.duration <= 600:
            raise ValueError("--duration must be within (0, 600] seconds")
        if not 0 <= self.warmup <= 120:
            raise ValueError("--warmup must be within [0, 120] seconds")
        if self.processes < 1:
            raise ValueError("--processes must be at least 1")

    def callers(self, worker: int) -> int:
        """Concurrent callers of worker ``worker`` (closed loop)."""
        base, extra = divmod(self.concurrency, self.processes)
        return base + (1 if worker < extra else 0)


@dataclass
class WorkerResult:
    """What one worker measured inside the window."""

    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    statuses: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0


@dataclass
class LoadResult:
    """The merged measurement of one run."""

    scenario: str
    plan: LoadPlan
    latency: LatencyHistogram
    send_lag: LatencyHistogram
    statuses: dict[str, int]
    window: float
    client_cpu_seconds: float
    #: CPU seconds each watched process (name -> seconds) used inside the window.
    process_cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: Share of the whole machine's CPU time that was busy inside the window (0..1).
    machine_busy: float = math.nan
    #: Change of each probe (name -> counter delta) over the window.
    probes: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.statuses.get("OK", 0)

    @property
    def failed(self) -> dict[str, int]:
        return {k: v for k, v in self.statuses.items() if k != "OK"}

    @property
    def throughput(self) -> float:
        """Successful calls per second inside the window."""
        return self.ok / self.window if self.window > 0 else math.nan


# --- worker side ---------------------------------------------------------------------------


async def _closed_loop(
    operation: Operation, callers: int, start: float, warm_end: float, end: float, drain: float
) -> WorkerResult:
    result = WorkerResult()
    latency, statuses = result.latency, result.statuses
    clock = time.monotonic

    async def caller(offset: int) -> None:
        index = offset
        while clock() < end:
            began = clock()
            status = await operation(index)
            done = clock()
            index += callers
            if warm_end <= done <= end:
                statuses[status] += 1
                if status == "OK":
                    latency.record(int((done - began) * 1_000_000))

    await _sleep_until(start)
    cpu_start = time.process_time()
    tasks = [asyncio.create_task(caller(k)) for k in range(callers)]
    await _sleep_until(end)
    result.cpu_seconds = time.process_time() - cpu_start
    # Calls straddling the end finish (or hit their deadline) but no longer count.
    await asyncio.wait(tasks, timeout=drain)
    for task in tasks:
        task.cancel()
    return result


async def _open_loop(
    operation: Operation,
    rate: float,
    phase: float,
    start: float,
    warm_end: float,
    end: float,
    plan: LoadPlan,
) -> WorkerResult:
    result = WorkerResult()
    latency, statuses, lag = result.latency, result.statuses, result.send_lag
    clock = time.monotonic
    interval = 1.0 / rate
    in_flight: set[asyncio.Task[None]] = set()

    async def one(index: int, intended: float) -> None:
        status = await operation(index)
        done = clock()
        if intended >= warm_end:
            statuses[status] += 1
            if status == "OK":
                latency.record(int((done - intended) * 1_000_000))

    await _sleep_until(start)
    cpu_start = time.process_time()
    index = 0
    while True:
        intended = start + phase + index * interval
        if intended >= end:
            break
        now = clock()
        if intended > now:
            await asyncio.sleep(intended - now)
            now = clock()
        # Behind schedule (timer granularity, a busy loop): send at once, latency still
        # counts from the intended time.
        if len(in_flight) >= plan.max_in_flight:
            if intended >= warm_end:
                statuses[BACKLOG] += 1
        else:
            if intended >= warm_end:
                lag.record(int((now - intended) * 1_000_000))
            task = asyncio.create_task(one(index, intended))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        index += 1
    await _sleep_until(end)
    result.cpu_seconds = time.process_time() - cpu_start
    # Calls due inside the window count even when they answer after it (up to their
    # deadline): dropping them would hide exactly the slow calls.
    if in_flight:
        await asyncio.wait(set(in_flight), timeout=plan.timeout + 1.0)
    for task in list(in_flight):
        task.cancel()
    return result


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _worker(
    scenario: Scenario, plan: LoadPlan, worker: int, conn: multiprocessing.connection.Connection
) -> None:
    callers = plan.callers(worker) if plan.mode == "closed" else 0
    if plan.mode == "closed" and callers == 0:
        conn.send(("ready", None))
        conn.recv()
        conn.send(("result", WorkerResult()))
        return
    # Open loop: callers sizes connection pools; allow for the in-flight calls of a
    # fair share of the rate at a pessimistic 20 ms each, at least 16.
    open_callers = max(16, math.ceil(plan.rate / plan.processes * 0.02))
    operation = await scenario.open(worker, callers or open_callers)
    try:
        conn.send(("ready", None))
        start: float = conn.recv()
        warm_end = start + plan.warmup
        end = warm_end + plan.duration
        if plan.mode == "closed":
            result = await _closed_loop(
                operation, callers, start, warm_end, end, drain=plan.timeout + 1.0
            )
        else:
            share = plan.rate / plan.processes
            phase = worker / plan.rate  # interleave the workers' schedules
            result = await _open_loop(operation, share, phase, start, warm_end, end, plan)
    finally:
        await operation.close()
    conn.send(("result", result))


def _worker_main(
    scenario: Scenario, plan: LoadPlan, worker: int, conn: multiprocessing.connection.Connection
) -> None:
    """Entry point of a worker process."""
    try:
        asyncio.run(_worker(scenario, plan, worker, conn))
    except BaseException as error:  # report to the parent instead of dying silently
        conn.send(("error", f"worker {worker}: {error!r}\n{traceback.format_exc()}"))
    finally:
        conn.close()


# --- parent side ---------------------------------------------------------------------------


class LoadError(RuntimeError):
    """A worker could not start or failed."""


WatchSource = Callable[[], Mapping[str, Sequence[int]]]


def run_load(
    scenario: Scenario,
    plan: LoadPlan,
    *,
    watch: WatchSource | None = None,
    probes: Mapping[str, Callable[[], float]] | None = None,
    ready_timeout: float = 60.0,
) -> LoadResult:
    """Run ``scenario`` under ``plan``.

    ``watch`` names the processes whose CPU is measured in the window (name -> pids); it
    is asked once the warm-up is over, when pooled database connections exist. ``probes``
    are counters read at the start and the end of the window (for example PostgreSQL's
    count of sessions opened); the result carries their change.
    """
    from bench import procfs

    context = multiprocessing.get_context("spawn")
    pipes: list[multiprocessing.connection.Connection] = []
    workers = []
    for index in range(plan.processes):
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=_worker_main,
            args=(scenario, plan, index, child_end),
            name=f"bench-{scenario.name}-{index}",
            daemon=True,
        )
        process.start()
        child_end.close()
        pipes.append(parent_end)
        workers.append(process)
    try:
        for pipe in pipes:
            if not pipe.poll(ready_timeout):
                raise LoadError(f"a worker of {scenario.name} did not get ready")
            kind, payload = _receive(pipe, scenario.name)
            if kind == "error":
                raise LoadError(str(payload))
        start = time.monotonic() + _START_MARGIN
        for pipe in pipes:
            pipe.send(start)
        warm_end = start + plan.warmup
        end = warm_end + plan.duration
        time.sleep(max(0.0, warm_end - time.monotonic()))
        watched = dict(watch() if watch is not None else {})
        cpu_before = procfs.cpu_snapshot(watched)
        machine_before = procfs.machine_cpu()
        probes_before = {name: probe() for name, probe in (probes or {}).items()}
        time.sleep(max(0.0, end - time.monotonic()))
        cpu_after = procfs.cpu_snapshot(watched)
        machine_after = procfs.machine_cpu()
        probe_delta = {
            name: probe() - probes_before[name] for name, probe in (probes or {}).items()
        }
        results: list[WorkerResult] = []
        for pipe in pipes:
            if not pipe.poll(plan.timeout + 30.0):
                raise LoadError(f"a worker of {scenario.name} did not report")
            kind, payload = _receive(pipe, scenario.name)
            if kind == "error":
                raise LoadError(str(payload))
            results.append(payload)
    finally:
        for process in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in pipes:
            pipe.close()
    process_cpu = procfs.cpu_delta(cpu_before, cpu_after)
    return LoadResult(
        scenario=scenario.name,
        plan=plan,
        latency=merge_histograms(r.latency for r in results),
        send_lag=merge_histograms(r.send_lag for r in results),
        statuses=merge_counters(r.statuses for r in results),
        window=plan.duration,
        client_cpu_seconds=sum(r.cpu_seconds for r in results),
        process_cpu_seconds=process_cpu,
        machine_busy=procfs.busy_share(machine_before, machine_after),
        probes=probe_delta,
    )


def _receive(pipe: multiprocessing.connection.Connection, name: str) -> tuple[str, Any]:
    try:
        message: tuple[str, Any] = pipe.recv()
    except EOFError:
        raise LoadError(f"a worker of {name} died without a word (see its stderr)") from None
    return message
