"""``python -m bench suite``: every scenario and ceiling in one run, on one machine.

What it does, in order (``--quick`` shortens every run and skips the 100k-movie and
two-replica phases):

1. Creates four fresh PostgreSQL databases (one per service) on the loopback server.
2. Starts ``cinema up --replicas 1`` on them, creates three cast members through the API,
   seeds 1,000 movies (:mod:`bench.seed`), registers a buyer.
3. Ceilings: the echo stub (:mod:`bench.stub`) bare, on Cinema's bootstrap, and with the
   thread hop; the stub through an Envoy rendered by the gateway's code, as gRPC and JSON;
   the hot-path query alone over psycopg2; the GetMovie use case alone, in-process.
4. The scenarios against the system: GetMovie (gRPC direct to the replica, gRPC through
   Envoy, JSON through Envoy), ListMovies, then open loop at half the measured peak, then
   CreateMovie (3 casts) and the buy path (their rows are removed afterwards).
5. ``cinema up --replicas 2`` on the same databases: GetMovie through Envoy again.
6. 99,000 more movies (100k): GetMovie and ListMovies again, and the query alone.
7. Drops the databases, prints the table, and writes the figures into
   ``docs/benchmarks.md`` between its ``bench:begin``/``bench:end`` markers.

Everything shares the machine's CPUs, so the figures that matter are ratios within this
one run and CPU time per call; absolute rates depend on what else the machine is doing
(each run records the cores other processes used while it was measured).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import fixtures, processes, procfs, profile, report, scenarios, seed
from bench.loadgen import LoadPlan, LoadResult, Scenario, WatchSource, run_load
from bench.profile import ProfileSummary
from bench.stats import ratio
from bench.target import Target

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
SERVICES = ("movie", "cast", "user", "order")
#: Closed-loop callers for peak runs: enough to keep a one-process Python server and
#: Envoy busy, few enough that queueing does not dominate the latencies.
PEAK_CONCURRENCY = 32
GENERATOR_PROCESSES = 2
#: The argon2 cost is irrelevant to every measured path (tokens are verified, passwords
#: only at register/login during set-up), so set-up uses light parameters.
LIGHT_ARGON2 = {
    "CINEMA_ARGON2_TIME_COST": "1",
    "CINEMA_ARGON2_MEMORY_KIB": "1024",
    "CINEMA_ARGON2_PARALLELISM": "1",
}


@dataclass
class Measurement:
    """One run of the suite, with where it ran."""

    key: str
    label: str
    path: str
    data: str
    replicas: str
    result: LoadResult
    ceiling: str | None = None


@dataclass
class Suite:
    """The state of one suite run."""

    quick: bool
    work_dir: pathlib.Path
    postgres_url: str
    profile: bool = False
    measurements: dict[str, Measurement] = field(default_factory=dict)
    profiles: dict[str, ProfileSummary] = field(default_factory=dict)
    probes: dict[str, Callable[[], float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    # -- plans ----------------------------------------------------------------------------

    def plan(self, **overrides: Any) -> LoadPlan:
        """The suite's plan for one run (short under --quick)."""
        values: dict[str, Any] = {
            "mode": "closed",
            "concurrency": PEAK_CONCURRENCY,
            "duration": 3.0 if self.quick else 8.0,
            "warmup": 1.0 if self.quick else 2.0,
            "processes": GENERATOR_PROCESSES,
        }
        values.update(overrides)
        return LoadPlan(**values)

    def measure(
        self,
        key: str,
        label: str,
        scenario: Scenario,
        watch: WatchSource,
        *,
        path: str,
        data: str = "-",
        replicas: str = "-",
        ceiling: str | None = None,
        **plan: Any,
    ) -> LoadResult:
        """Run one scenario, print its block, keep it under ``key``."""
        elapsed = time.monotonic() - self.started
        print(f"\n[{elapsed:5.0f}s] {label}", flush=True)
        result = run_load(scenario, self.plan(**plan), watch=watch, probes=self.probes)
        print(report.text(result), flush=True)
        self.measurements[key] = Measurement(key, label, path, data, replicas, result, ceiling)
        return result

    def profile_run(
        self, label: str, scenario: Scenario, pids: Mapping[str, int], **plan: Any
    ) -> None:
        """An extra, unmeasured run while py-spy samples ``pids`` (name -> pid)."""
        load_plan = self.plan(**plan)
        seconds = load_plan.warmup + load_plan.duration + 1.0
        elapsed = time.monotonic() - self.started
        print(f"\n[{elapsed:5.0f}s] profile: {label} ({', '.join(pids)})", flush=True)
        recorders = {
            name: (
                path := self.work_dir / "profiles" / f"{label}-{name}.raw".replace(" ", "_"),
                profile.start_recording(pid, seconds, path),
            )
            for name, pid in pids.items()
        }
        result = run_load(scenario, load_plan)
        print(f"  {result.throughput:,.0f} calls/s while sampled (not in the tables)")
        for name, (path, recorder) in recorders.items():
            try:
                recorder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                recorder.kill()
            self.profiles[f"{label}: {name}"] = profile.summarise_file(path, top=12)

    def peak(self, key: str) -> float:
        """Throughput of an earlier run (NaN if it did not run)."""
        found = self.measurements.get(key)
        return found.result.throughput if found else math.nan


# --- what runs -------------------------------------------------------------------------------


def _system_watch(system: processes.CinemaUp, database_prefix: str) -> WatchSource:
    def groups() -> Mapping[str, Sequence[int]]:
        grouped: dict[str, list[int]] = {}
        for name, pid in system.pids().items():
            grouped.setdefault(name.split("-")[0], []).append(pid)
        grouped["postgres"] = procfs.postgres_backends(database_prefix)
        return grouped

    return groups


def _fixed_watch(**pids: int) -> WatchSource:
    frozen = {name: [pid] for name, pid in pids.items()}
    return lambda: frozen


def _database_watch(database_prefix: str) -> WatchSource:
    return lambda: {"postgres": procfs.postgres_backends(database_prefix)}


def run_ceilings(suite: Suite, movie_url: str, ids: Sequence[str], database_prefix: str) -> None:
    """Echo stub direct and through Envoy, the query alone, the use case alone."""
    logs = suite.work_dir / "logs"
    with contextlib.ExitStack() as stack:
        stub = processes.start_stub(logs)
        stack.callback(stub.stop)
        hop = processes.start_stub(logs, thread_hop=True)
        stack.callback(hop.stop)
        bare = processes.start_stub(logs, bare=True)
        stack.callback(bare.stop)
        gateway = processes.start_stub_gateway(suite.work_dir, stub.port)
        stack.callback(gateway.stop)
        some_ids = tuple(ids)
        local = "127.0.0.1"
        suite.measure(
            "echo-bare",
            "ceiling: echo stub on a bare grpc.aio server (no interceptors)",
            scenarios.GetMovieGrpc(Target(local, bare.port), some_ids),
            _fixed_watch(stub=bare.pid),
            path="gRPC direct",
        )
        suite.measure(
            "echo",
            "ceiling: echo stub on Cinema's server stack (CinemaServer)",
            scenarios.GetMovieGrpc(Target(local, stub.port), some_ids),
            _fixed_watch(stub=stub.pid),
            path="gRPC direct",
        )
        if not suite.quick:
            # The load generator's own ceiling: the same echo with one and three generator
            # processes instead of two. If one process got as far as two, the generator
            # was not what limited the echo figure.
            for processes_count in (1, 3):
                suite.measure(
                    f"echo-{processes_count}gen",
                    f"generator check: echo stub, {processes_count} generator process(es)",
                    scenarios.GetMovieGrpc(Target(local, stub.port), some_ids),
                    _fixed_watch(stub=stub.pid),
                    path="gRPC direct",
                    processes=processes_count,
                )
        suite.measure(
            "echo-thread-hop",
            "ceiling: echo stub on Cinema's stack plus asyncio.to_thread per call",
            scenarios.GetMovieGrpc(Target(local, hop.port), some_ids),
            _fixed_watch(stub=hop.pid),
            path="gRPC direct",
        )
        suite.measure(
            "echo-envoy-grpc",
            "ceiling: echo stub through Envoy (gateway config), gRPC",
            scenarios.GetMovieGrpc(Target(local, gateway.port), some_ids),
            _fixed_watch(stub=stub.pid, envoy=gateway.pid),
            path="gRPC via Envoy",
        )
        suite.measure(
            "echo-envoy-json",
            "ceiling: echo stub through Envoy (gateway config), JSON",
            scenarios.GetMovieJson(Target(local, gateway.port), some_ids),
            _fixed_watch(stub=stub.pid, envoy=gateway.pid),
            path="JSON via Envoy",
        )
        suite.measure(
            "echo-list-envoy-json",
            "ceiling: canned 20-movie ListMovies page through Envoy, JSON",
            scenarios.ListMoviesJson(Target(local, gateway.port)),
            _fixed_watch(stub=stub.pid, envoy=gateway.pid),
            path="JSON via Envoy",
        )
    suite.measure(
        "db-1k",
        "ceiling: the GetMovie query alone (psycopg2, one connection per process)",
        scenarios.DbGetMovie(movie_url, tuple(ids)),
        _database_watch(database_prefix),
        path="psycopg2",
        data="1k",
        concurrency=GENERATOR_PROCESSES,
    )
    suite.measure(
        "usecase-1k",
        "ceiling: MovieService.get_movie in-process, one thread (no gRPC)",
        scenarios.UseCaseGetMovie(movie_url, tuple(ids)),
        _database_watch(database_prefix),
        path="in-process",
        data="1k",
        concurrency=1,
        processes=1,
    )


def run_system_scenarios(
    suite: Suite,
    system: processes.CinemaUp,
    database_prefix: str,
    ids: Sequence[str],
    *,
    data: str,
    replicas: int,
    fixture: SystemFixture | None,
    tag: str,
) -> None:
    """The scenarios against one running system; ``fixture`` adds create and buy."""
    watch = _system_watch(system, database_prefix)
    envoy = Target("127.0.0.1", system.port)
    direct = Target("127.0.0.1", system.replica_port("movie-1"))
    id_tuple = tuple(ids)
    where = {"data": data, "replicas": str(replicas)}
    if replicas == 1:
        suite.measure(
            f"get-grpc-direct-{tag}",
            f"GetMovie, gRPC direct to movie-1 ({data} movies)",
            scenarios.GetMovieGrpc(direct, id_tuple),
            watch,
            path="gRPC direct",
            ceiling="echo",
            **where,
        )
    suite.measure(
        f"get-grpc-envoy-{tag}",
        f"GetMovie, gRPC through Envoy ({data} movies, {replicas} replica(s))",
        scenarios.GetMovieGrpc(envoy, id_tuple),
        watch,
        path="gRPC via Envoy",
        ceiling="echo-envoy-grpc",
        **where,
    )
    suite.measure(
        f"get-json-envoy-{tag}",
        f"GetMovie, JSON through Envoy ({data} movies, {replicas} replica(s))",
        scenarios.GetMovieJson(envoy, id_tuple),
        watch,
        path="JSON via Envoy",
        ceiling="echo-envoy-json",
        **where,
    )
    if replicas == 1:
        suite.measure(
            f"list-json-envoy-{tag}",
            f"ListMovies first page (20), JSON through Envoy ({data} movies)",
            scenarios.ListMoviesJson(envoy),
            watch,
            path="JSON via Envoy",
            ceiling="echo-list-envoy-json",
            **where,
        )
    if fixture is None:
        return
    for key, label, scenario, path in (
        (
            f"get-grpc-direct-{tag}",
            "GetMovie, gRPC direct, open loop at half the peak",
            scenarios.GetMovieGrpc(direct, id_tuple),
            "gRPC direct",
        ),
        (
            f"get-json-envoy-{tag}",
            "GetMovie, JSON through Envoy, open loop at half the peak",
            scenarios.GetMovieJson(envoy, id_tuple),
            "JSON via Envoy",
        ),
    ):
        peak = suite.peak(key)
        if math.isnan(peak) or peak <= 0:
            continue
        suite.measure(
            f"{key}-open",
            f"{label} ({peak / 2:,.0f} calls/s)",
            scenario,
            watch,
            path=path,
            mode="open",
            rate=round(peak / 2, 1),
            **where,
        )
    suite.measure(
        f"create-json-{tag}",
        "CreateMovie with 3 cast ids, JSON through Envoy (admin token)",
        scenarios.CreateMovieJson(envoy, fixture.admin_token, fixture.cast_ids),
        watch,
        path="JSON via Envoy",
        ceiling=f"get-json-envoy-{tag}",
        **where,
    )
    suite.measure(
        f"buy-json-{tag}",
        "Buy path: CreateOrder + PayOrder, JSON through Envoy (user token)",
        scenarios.BuyJson(envoy, fixture.user_token, id_tuple),
        watch,
        path="JSON via Envoy",
        ceiling=f"get-json-envoy-{tag}",
        **where,
    )
    if suite.profile:
        pids = system.pids()
        suite.profile_run(
            "GetMovie gRPC direct", scenarios.GetMovieGrpc(direct, id_tuple),
            {"movie-1": pids["movie-1"]},
        )  # fmt: skip
        suite.profile_run(
            "CreateMovie JSON",
            scenarios.CreateMovieJson(envoy, fixture.admin_token, fixture.cast_ids),
            {"movie-1": pids["movie-1"], "cast-1": pids["cast-1"]},
        )
        suite.profile_run(
            "Buy JSON",
            scenarios.BuyJson(envoy, fixture.user_token, id_tuple),
            {"order-1": pids["order-1"], "user-1": pids["user-1"], "movie-1": pids["movie-1"]},
        )


@dataclass(frozen=True)
class SystemFixture:
    """Tokens and cast members for the writing scenarios."""

    admin_token: str
    user_token: str
    cast_ids: tuple[str, ...]


@contextlib.contextmanager
def cinema_up(
    suite: Suite, data_dir: pathlib.Path, replicas: int, urls: Mapping[str, str]
) -> Iterator[processes.CinemaUp]:
    """``cinema up`` for the duration of a block."""
    print(f"\nstarting cinema up --replicas {replicas} ...", flush=True)
    env = dict(LIGHT_ARGON2)
    system = processes.CinemaUp.start(data_dir, replicas=replicas, database_urls=urls, env=env)
    try:
        yield system
    finally:
        system.stop()


def run_suite(suite: Suite) -> None:
    """Everything, in the order of the module docstring."""
    data_dir = suite.work_dir / "cinema-data"
    with processes.postgres_databases(SERVICES, suite.postgres_url) as (databases, urls):
        prefix = databases.prefix
        suite.probes["db sessions"] = databases.sessions_opened
        suite.notes.append(f"PostgreSQL {databases.server_version()}")
        with cinema_up(suite, data_dir, 1, urls) as system:
            envoy = Target("127.0.0.1", system.port)
            admin = fixtures.mint_admin_token(data_dir / "keys")
            cast_ids = fixtures.ensure_casts(envoy, admin)
            ids = seed.seed_movies(urls["movie"], 1000, cast_ids)
            _, user_token = fixtures.register_user(envoy)
            run_ceilings(suite, urls["movie"], ids, prefix)
            run_system_scenarios(
                suite, system, prefix, ids, data="1k", replicas=1, tag="1k-r1",
                fixture=SystemFixture(admin, user_token, cast_ids),
            )  # fmt: skip
        removed = seed.delete_unseeded_movies(urls["movie"])
        suite.notes.append(f"removed {removed} movies made by CreateMovie before the next phase")
        if suite.quick:
            return
        with cinema_up(suite, data_dir, 2, urls) as system:
            run_system_scenarios(
                suite, system, prefix, ids, data="1k", replicas=2, tag="1k-r2", fixture=None
            )
        more = seed.seed_movies(urls["movie"], 99_000, cast_ids, first_number=1000)
        all_ids = [*ids, *more]
        suite.notes.append(f"movies for the 100k phase: {seed.count_movies(urls['movie'])}")
        with cinema_up(suite, data_dir, 1, urls) as system:
            run_system_scenarios(
                suite, system, prefix, all_ids, data="100k", replicas=1, tag="100k-r1",
                fixture=None,
            )  # fmt: skip
            suite.measure(
                "db-100k",
                "ceiling: the GetMovie query alone, 100k movies",
                scenarios.DbGetMovie(urls["movie"], tuple(all_ids)),
                _database_watch(prefix),
                path="psycopg2",
                data="100k",
                concurrency=GENERATOR_PROCESSES,
            )


# --- the report ------------------------------------------------------------------------------


def machine_facts(command: str) -> list[tuple[str, str]]:
    """What the figures were measured on, and how."""
    import grpc

    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    envoy_version = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError, processes.StartError):
        out = subprocess.run(
            [processes.tool("envoy"), "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        envoy_version = out.split("version:")[-1].strip().split("/")[1]
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = pathlib.Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip() or "?"  # fmt: skip
    load = procfs.load_average()
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("command", command),
        ("commit", commit),
        ("CPUs (nproc)", str(os.cpu_count())),
        ("CPU model", cpu_model),
        ("memory", memory),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("grpcio", grpc.__version__),
        ("Envoy", envoy_version),
        ("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"),
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def _system_cpu_per_call(result: LoadResult) -> float:
    """CPU µs per call of every watched process (servers, Envoy, PostgreSQL backends)."""
    total = sum(result.process_cpu_seconds.values())
    return total * 1_000_000 / result.ok if result.ok else math.nan


def results_table(suite: Suite) -> list[str]:
    """Every run: figures, CPU per call, and its ceiling as a ratio."""
    lines = [
        "| run | path | movies | replicas | load | calls/s | p50 ms | p95 ms | p99 ms "
        "| failed | server CPU µs/call | ceiling | ratio | ratio by CPU |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: "
        "| ---: |",
    ]
    for m in suite.measurements.values():
        r = m.result
        s = report.summary(r)
        load = (
            f"closed {r.plan.concurrency}"
            if r.plan.mode == "closed"
            else f"open {r.plan.rate:,.0f}/s"
        )
        failed = ", ".join(f"{k} {v}" for k, v in r.failed.items()) or "0"
        ceiling = suite.measurements.get(m.ceiling) if m.ceiling else None
        share = ratio(r.throughput, ceiling.result.throughput) if ceiling else math.nan
        by_cpu = (
            ratio(_system_cpu_per_call(ceiling.result), _system_cpu_per_call(r))
            if ceiling
            else math.nan
        )
        lines.append(
            f"| {m.label} | {m.path} | {m.data} | {m.replicas} | {load} "
            f"| {_fmt(r.throughput)} | {_fmt(s['p50_ms'], 2)} | {_fmt(s['p95_ms'], 2)} "
            f"| {_fmt(s['p99_ms'], 2)} | {failed} | {_fmt(_system_cpu_per_call(r))} "
            f"| {ceiling.key if ceiling else '-'} | {_percent(share)} | {_percent(by_cpu)} |"
        )
    return lines


def cpu_table(suite: Suite) -> list[str]:
    """CPU µs per call of each process group, and cores busy with other work."""
    groups = sorted(
        {name for m in suite.measurements.values() for name in m.result.process_cpu_seconds}
    )
    lines = [
        "| run | load generator | "
        + " | ".join(groups)
        + " | other processes (cores) | DB connections opened/s |",
        "| --- | ---: | " + " | ".join("---:" for _ in groups) + " | ---: | ---: |",
    ]
    for m in suite.measurements.values():
        s = report.summary(m.result)
        per = s["process_cpu_us_per_call"]
        cells = [_fmt(per.get(g)) if g in per else "" for g in groups]
        opened = s["probes_per_second"].get("db sessions")
        lines.append(
            f"| {m.key} | {_fmt(s['client_cpu_us_per_call'])} | "
            + " | ".join(cells)
            + f" | {_fmt(s['other_cores'], 2)} | {_fmt(opened, 1)} |"
        )
    return lines


@dataclass(frozen=True)
class TargetCheck:
    """One of issue 6's targets, evaluated on this run."""

    name: str
    value: float
    threshold: float
    detail: str
    lower_is_better: bool = False

    @property
    def met(self) -> bool | None:
        if math.isnan(self.value):
            return None
        return self.value < self.threshold if self.lower_is_better else self.value >= self.threshold


def targets(suite: Suite) -> list[TargetCheck]:
    """Issue 6's targets against this run's figures."""
    m = suite.measurements

    def tput(key: str) -> float:
        return m[key].result.throughput if key in m else math.nan

    def p99(key: str) -> float:
        if key not in m or not m[key].result.latency.total:
            return math.nan
        return m[key].result.latency.percentile(99) / 1000

    def cpu(key: str) -> float:
        return _system_cpu_per_call(m[key].result) if key in m else math.nan

    def pair(key: str, against: str) -> str:
        return (
            f"{_fmt(tput(key))} vs {_fmt(tput(against))} calls/s; by CPU per call "
            f"{_percent(ratio(cpu(against), cpu(key)))} ({_fmt(cpu(key))} vs "
            f"{_fmt(cpu(against))} µs)"
        )

    return [
        TargetCheck(
            "GetMovie, direct gRPC, one process >= 50% of the echo ceiling",
            ratio(tput("get-grpc-direct-1k-r1"), tput("echo")),
            0.5,
            pair("get-grpc-direct-1k-r1", "echo"),
        ),
        TargetCheck(
            "GetMovie, JSON through Envoy >= 70% of direct gRPC",
            ratio(tput("get-json-envoy-1k-r1"), tput("get-grpc-direct-1k-r1")),
            0.7,
            pair("get-json-envoy-1k-r1", "get-grpc-direct-1k-r1"),
        ),
        TargetCheck(
            "CreateMovie (3 casts) >= 40% of GetMovie (both JSON through Envoy)",
            ratio(tput("create-json-1k-r1"), tput("get-json-envoy-1k-r1")),
            0.4,
            pair("create-json-1k-r1", "get-json-envoy-1k-r1"),
        ),
        TargetCheck(
            "p99 < 20 ms at half the peak: GetMovie direct gRPC, open loop",
            p99("get-grpc-direct-1k-r1-open"),
            20.0,
            "p99 ms",
            lower_is_better=True,
        ),
        TargetCheck(
            "p99 < 20 ms at half the peak: GetMovie JSON through Envoy, open loop",
            p99("get-json-envoy-1k-r1-open"),
            20.0,
            "p99 ms",
            lower_is_better=True,
        ),
    ]


def targets_table(suite: Suite) -> list[str]:
    lines = ["| target | this run | met? | figures |", "| --- | ---: | --- | --- |"]
    for target in targets(suite):
        value = (
            "-"
            if math.isnan(target.value)
            else (f"{target.value:.2f} ms" if target.lower_is_better else f"{target.value:.0%}")
        )
        met = {True: "yes", False: "**no**", None: "not run"}[target.met]
        lines.append(f"| {target.name} | {value} | {met} | {target.detail} |")
    return lines


def profiles_section(suite: Suite) -> list[str]:
    """Top frames of each profile run (py-spy, GIL holder only)."""
    if not suite.profiles:
        return []
    lines = [
        "### Profiles (py-spy --gil, separate unmeasured runs)",
        "",
        "Share of samples in which the GIL-holding thread was in that frame: *self* is where "
        "the CPU went, *inclusive* who asked for it. `Handle._run` is the event loop running "
        "grpc's Cython callbacks (py-spy sees no frames inside them).",
        "",
    ]
    for name, summary in suite.profiles.items():
        lines += [
            f"**{name}** ({summary.samples} samples; event-loop thread "
            f"{summary.event_loop:.0%}, worker threads {summary.worker_threads:.0%})",
            "",
            "| self | frame |",
            "| ---: | --- |",
        ]
        lines += [f"| {f.share:.0%} | `{f.frame}` |" for f in summary.self_time[:8]]
        lines += ["", "| inclusive | frame |", "| ---: | --- |"]
        lines += [f"| {f.share:.0%} | `{f.frame}` |" for f in summary.inclusive[:12]]
        lines.append("")
    return lines


def generated_section(suite: Suite, command: str, facts: list[tuple[str, str]]) -> str:
    """The Markdown between the markers of docs/benchmarks.md."""
    elapsed = time.monotonic() - suite.started
    parts = [
        BEGIN,
        "<!-- Written by `python -m bench suite`; edits here are overwritten. -->",
        "",
        "### Machine and run",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in facts),
        f"| suite duration | {elapsed:.0f} s |",
        *(f"| note | {note} |" for note in suite.notes),
        "",
        "### Targets (issue 6)",
        "",
        *targets_table(suite),
        "",
        "### Every run against its ceiling",
        "",
        "Throughput counts successful calls only; `failed` lists the others by gRPC status "
        "or HTTP status. `server CPU µs/call` adds up every watched process (service "
        "replicas, Envoy, the `cinema up` launcher and gateway sidecar, the PostgreSQL "
        "backends of this run's databases) and divides by successful calls.",
        "",
        *results_table(suite),
        "",
        "### CPU per call by process (µs)",
        "",
        "`other processes` is CPU the machine spent outside this run while it was measured: "
        "noise that lowers every rate of that row.",
        "",
        *cpu_table(suite),
        "",
        *profiles_section(suite),
        END,
    ]
    return "\n".join(parts)


def write_report(path: pathlib.Path, section: str) -> None:
    """Replace the generated section of ``path`` (or create the file around it)."""
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            path.write_text(head + section + tail)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n" + section + "\n")


def main(args: argparse.Namespace) -> int:
    """``python -m bench suite``."""
    command = "python -m bench suite" + (" --quick" if args.quick else "")
    facts = machine_facts(command)
    with contextlib.ExitStack() as stack:
        if args.work_dir is not None:
            work_dir = args.work_dir.resolve()
            work_dir.mkdir(parents=True, exist_ok=True)
        else:
            work_dir = pathlib.Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
            )
        wants_profile = args.profile if args.profile is not None else not args.quick
        if wants_profile and profile.available() is None:
            print("py-spy is not installed: no profiles (pip install py-spy)", file=sys.stderr)
            wants_profile = False
        suite = Suite(args.quick, work_dir, args.postgres, profile=wants_profile)
        for name, value in facts:
            print(f"{name}: {value}")
        try:
            run_suite(suite)
        except (processes.StartError, scenarios.ScenarioError, fixtures.FixtureError) as error:
            print(f"\nbench suite: {error}\n(logs in {work_dir})", file=sys.stderr)
            if args.work_dir is None:
                print("re-run with --work-dir DIR to keep the logs", file=sys.stderr)
            return 1
        section = generated_section(suite, command, facts)
        print("\n" + section)
        if not args.no_write:
            write_report(args.output, section)
            print(f"\nwrote {args.output}")
    return 0
