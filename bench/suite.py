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

from bench import charts, fixtures, processes, procfs, profile, report, scenarios, seed, serving
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
#: Open-loop runs at half the peak are repeated: the p99 target holds in three in a row.
OPEN_LOOP_REPEATS = 3
#: The two-replica phase runs once per policy: least request against round robin.
BALANCING_POLICIES = ("ROUND_ROBIN", "LEAST_REQUEST")
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
    #: Resident MiB of each process of ``cinema up --replicas 1`` after its runs.
    footprint: dict[str, float] = field(default_factory=dict)
    #: Seconds until ``cinema up`` was healthy: label -> seconds.
    startups: dict[str, float] = field(default_factory=dict)
    database_prefix: str = ""
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
        bare = processes.start_stub(logs, bare=True)
        stack.callback(bare.stop)
        gateway = processes.start_stub_gateway(suite.work_dir, stub.port)
        stack.callback(gateway.stop)
        some_ids = tuple(ids)
        local = "127.0.0.1"
        suite.measure(
            "echo-bare",
            "ceiling: echo stub on a bare grpc.server (no interceptors)",
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


#: The serving-model A/B (bench/serving.py): key, model, label, grpcio release (None: ours).
SERVING_MODELS = (
    ("aio-thread", "aio-thread", "grpc.aio + asyncio.to_thread (the model before)", None),
    ("aio-uvloop-thread", "aio-uvloop-thread", "grpc.aio on uvloop + asyncio.to_thread", None),
    ("sync", "sync", "synchronous grpc.server, use case in the worker thread (adopted)", None),
    ("aio-asyncpg", "aio-asyncpg", "grpc.aio on uvloop, asyncpg on the loop, no hop", None),
    (
        "aio-thread-grpcio-old",
        "aio-thread",
        f"grpc.aio + asyncio.to_thread on grpcio {serving.GRPCIO_BEFORE_REGRESSION}",
        serving.GRPCIO_BEFORE_REGRESSION,
    ),
)


def run_serving_models(suite: Suite, movie_url: str, ids: Sequence[str]) -> None:
    """Each serving model's echo and GetMovie, read against the one echo ceiling."""
    logs = suite.work_dir / "logs"
    for key, model, label, grpcio in SERVING_MODELS:
        python_path = None
        if grpcio is not None:
            try:
                python_path = serving.prepare_grpcio(grpcio, suite.work_dir)
            except subprocess.CalledProcessError as error:
                suite.notes.append(f"serving A/B: grpcio {grpcio} could not be installed: {error}")
                continue
        for echo in (True, False):
            child = processes.start_serving_model(
                logs, model, movie_url, echo=echo, python_path=python_path,
                name=f"serving-{key}" + ("-echo" if echo else ""),
            )  # fmt: skip
            try:
                suite.measure(
                    f"serving-{key}" + ("-echo" if echo else ""),
                    f"serving A/B: {label}, " + ("echo" if echo else "GetMovie"),
                    scenarios.GetMovieGrpc(Target("127.0.0.1", child.port), tuple(ids)),
                    _fixed_watch(server=child.pid),
                    path="gRPC direct",
                    data="-" if echo else "1k",
                    ceiling="echo",
                )
            finally:
                child.stop()


def record_footprint(suite: Suite, system: processes.CinemaUp) -> None:
    """Resident memory of every service process, after the load it has served."""
    for name, pid in sorted(system.pids().items()):
        rss = procfs.resident_mib(pid)
        if rss is not None:
            suite.footprint[name] = rss


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
    policy: str | None = None,
) -> None:
    """The scenarios against one running system; ``fixture`` adds create and buy."""
    watch = _system_watch(system, database_prefix)
    envoy = Target("127.0.0.1", system.port)
    direct = Target("127.0.0.1", system.replica_port("movie-1"))
    id_tuple = tuple(ids)
    where = {"data": data, "replicas": str(replicas) + (f" ({policy})" if policy else "")}
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
        for run in range(1, OPEN_LOOP_REPEATS + 1):
            suite.measure(
                f"{key}-open-{run}",
                f"{label} ({peak / 2:,.0f} calls/s), run {run}",
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
    suite: Suite,
    data_dir: pathlib.Path,
    replicas: int,
    urls: Mapping[str, str],
    *,
    balancing: str | None = None,
) -> Iterator[processes.CinemaUp]:
    """``cinema up`` for the duration of a block (``balancing``: every cluster's policy)."""
    print(f"\nstarting cinema up --replicas {replicas} ...", flush=True)
    env = dict(LIGHT_ARGON2)
    if balancing is not None:
        env["CINEMA_BALANCING"] = balancing
    system = processes.CinemaUp.start(data_dir, replicas=replicas, database_urls=urls, env=env)
    try:
        yield system
    finally:
        system.stop()


def measure_startup(suite: Suite) -> None:
    """``cinema up`` as a user runs it (defaults: two replicas each, SQLite): seconds to
    healthy on a fresh data dir, then again on the same data (a restart)."""
    data_dir = suite.work_dir / "startup-data"
    for label in ("fresh data dir", "restart"):
        system = processes.CinemaUp.start(data_dir, replicas=2, database_urls={}, env={})
        suite.startups[label] = system.startup_seconds
        print(f"  cinema up --replicas 2 (SQLite), {label}: {system.startup_seconds:.2f} s")
        system.stop()


def run_baseline(
    suite: Suite, urls: Mapping[str, str], key_dir: pathlib.Path, admin_token: str
) -> None:
    """The FastAPI + uvicorn + nginx design beside Cinema (bench/baselines)."""
    from bench.baselines import runner
    from services.common import keyring

    logs_dir = suite.work_dir / "baseline"
    _, public_key = keyring.signing_files(key_dir)
    base = runner.start_baseline(
        logs_dir, urls["baseline_movie"], urls["baseline_cast"], public_key
    )
    try:
        target = Target("127.0.0.1", base.port)
        cast_ids = fixtures.ensure_casts(target, admin_token)
        ids = tuple(seed.seed_movies(urls["baseline_movie"], 1000, cast_ids))

        def watch() -> Mapping[str, Sequence[int]]:
            groups = {name: list(pids) for name, pids in base.pids().items()}
            groups["postgres"] = procfs.postgres_backends(suite.database_prefix)
            return groups

        suite.measure(
            "baseline-get-json",
            "baseline: GET one movie, JSON at nginx (FastAPI + uvicorn)",
            scenarios.GetMovieJson(target, ids),
            watch,
            path="JSON via nginx",
            data="1k",
            replicas="1",
        )
        suite.measure(
            "baseline-create-json",
            "baseline: CreateMovie with 3 cast ids, JSON at nginx (one batched cast check)",
            scenarios.CreateMovieJson(target, admin_token, cast_ids),
            watch,
            path="JSON via nginx",
            data="1k",
            replicas="1",
            ceiling="baseline-get-json",
        )
        peak = suite.peak("baseline-get-json")
        if not math.isnan(peak) and peak > 0:
            for run in range(1, OPEN_LOOP_REPEATS + 1):
                suite.measure(
                    f"baseline-get-json-open-{run}",
                    f"baseline: GET one movie at nginx, open loop at half the peak, run {run}",
                    scenarios.GetMovieJson(target, ids),
                    watch,
                    path="JSON via nginx",
                    data="1k",
                    replicas="1",
                    mode="open",
                    rate=round(peak / 2, 1),
                )
    finally:
        base.stop()


def run_suite(suite: Suite) -> None:
    """Everything, in the order of the module docstring."""
    data_dir = suite.work_dir / "cinema-data"
    names = (*SERVICES, "baseline_movie", "baseline_cast")
    print("\nstart-up of cinema up (two replicas, SQLite) ...", flush=True)
    measure_startup(suite)
    with processes.postgres_databases(names, suite.postgres_url) as (databases, all_urls):
        prefix = databases.prefix
        suite.database_prefix = prefix
        urls = {name: all_urls[name] for name in SERVICES}
        suite.probes["db sessions"] = databases.sessions_opened
        suite.notes.append(f"PostgreSQL {databases.server_version()}")
        with cinema_up(suite, data_dir, 1, urls) as system:
            envoy = Target("127.0.0.1", system.port)
            admin = fixtures.mint_admin_token(data_dir / "keys")
            cast_ids = fixtures.ensure_casts(envoy, admin)
            ids = seed.seed_movies(urls["movie"], 1000, cast_ids)
            _, user_token = fixtures.register_user(envoy, admin)
            run_ceilings(suite, urls["movie"], ids, prefix)
            run_serving_models(suite, urls["movie"], ids)
            run_system_scenarios(
                suite, system, prefix, ids, data="1k", replicas=1, tag="1k-r1",
                fixture=SystemFixture(admin, user_token, cast_ids),
            )  # fmt: skip
            record_footprint(suite, system)
        run_baseline(suite, all_urls, data_dir / "keys", admin)
        removed = seed.delete_unseeded_movies(urls["movie"])
        suite.notes.append(f"removed {removed} movies made by CreateMovie before the next phase")
        if suite.quick:
            return
        for policy in BALANCING_POLICIES:
            with cinema_up(suite, data_dir, 2, urls, balancing=policy) as system:
                run_system_scenarios(
                    suite, system, prefix, ids, data="1k", replicas=2,
                    tag=f"1k-r2-{policy.lower()}", fixture=None, policy=policy,
                )  # fmt: skip
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


def serving_table(suite: Suite) -> list[str]:
    """Each serving model: echo and GetMovie, CPU per call, share of the echo ceiling."""
    lines = [
        "| model | echo calls/s | GetMovie calls/s | GetMovie / its echo | GetMovie / echo "
        "ceiling | server CPU µs/call (echo, GetMovie) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ceiling = suite.measurements.get("echo")
    for key, _model, label, _grpcio in SERVING_MODELS:
        echo = suite.measurements.get(f"serving-{key}-echo")
        get = suite.measurements.get(f"serving-{key}")
        if echo is None or get is None:
            continue
        of_ceiling = (
            ratio(get.result.throughput, ceiling.result.throughput) if ceiling else math.nan
        )
        lines.append(
            f"| {label} | {_fmt(echo.result.throughput)} | {_fmt(get.result.throughput)} "
            f"| {_percent(ratio(get.result.throughput, echo.result.throughput))} "
            f"| {_percent(of_ceiling)} "
            f"| {_fmt(_system_cpu_per_call(echo.result))}, "
            f"{_fmt(_system_cpu_per_call(get.result))} |"
        )
    return lines


def footprint_table(suite: Suite) -> list[str]:
    """Seconds to healthy, and resident memory per process."""
    lines = ["| what | figure |", "| --- | ---: |"]
    for label, seconds in suite.startups.items():
        lines.append(f"| `cinema up` (two replicas, SQLite) healthy, {label} | {seconds:.2f} s |")
    for name, rss in sorted(suite.footprint.items()):
        lines.append(f"| resident memory of {name} after its runs | {rss:.0f} MiB |")
    return lines


@dataclass(frozen=True)
class TargetCheck:
    """One of the performance issue's targets, evaluated on this run."""

    name: str
    value: float
    threshold: float
    detail: str
    lower_is_better: bool = False
    unit: str = "ms"

    @property
    def met(self) -> bool | None:
        if math.isnan(self.value):
            return None
        return self.value < self.threshold if self.lower_is_better else self.value >= self.threshold


def targets(suite: Suite) -> list[TargetCheck]:
    """The performance targets (issue 9) against this run's figures."""
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

    def worst_p99(key: str) -> float:
        runs = [p99(f"{key}-open-{n}") for n in range(1, OPEN_LOOP_REPEATS + 1)]
        return math.nan if any(math.isnan(v) for v in runs) else max(runs)

    def p99_detail(key: str) -> str:
        runs = [p99(f"{key}-open-{n}") for n in range(1, OPEN_LOOP_REPEATS + 1)]
        return "p99 of the three runs: " + ", ".join(f"{_fmt(v, 2)} ms" for v in runs)

    services = {k: v for k, v in suite.footprint.items() if k.split("-")[0] in SERVICES}
    largest = max(services.values()) if services else math.nan
    slowest_start = max(suite.startups.values()) if suite.startups else math.nan
    return [
        TargetCheck(
            "GetMovie, direct gRPC, one process >= 65% of the echo ceiling",
            ratio(tput("get-grpc-direct-1k-r1"), tput("echo")),
            0.65,
            pair("get-grpc-direct-1k-r1", "echo"),
        ),
        TargetCheck(
            "GET one movie, JSON at Envoy (1 replica) >= 1.5x the baseline's at nginx",
            ratio(tput("get-json-envoy-1k-r1"), tput("baseline-get-json")),
            1.5,
            pair("get-json-envoy-1k-r1", "baseline-get-json"),
        ),
        TargetCheck(
            "GetMovie, gRPC through Envoy >= 2x the baseline's JSON at nginx",
            ratio(tput("get-grpc-envoy-1k-r1"), tput("baseline-get-json")),
            2.0,
            pair("get-grpc-envoy-1k-r1", "baseline-get-json"),
        ),
        TargetCheck(
            "CreateMovie (3 cast ids) at the front door >= 50% of GetMovie (JSON)",
            ratio(tput("create-json-1k-r1"), tput("get-json-envoy-1k-r1")),
            0.5,
            pair("create-json-1k-r1", "get-json-envoy-1k-r1"),
        ),
        TargetCheck(
            "CreateMovie (3 cast ids) >= 1.5x the baseline's create",
            ratio(tput("create-json-1k-r1"), tput("baseline-create-json")),
            1.5,
            pair("create-json-1k-r1", "baseline-create-json"),
        ),
        TargetCheck(
            "Buy path (CreateOrder + PayOrder, JSON) >= 25% of GetMovie (JSON)",
            ratio(tput("buy-json-1k-r1"), tput("get-json-envoy-1k-r1")),
            0.25,
            pair("buy-json-1k-r1", "get-json-envoy-1k-r1"),
        ),
        TargetCheck(
            "p99 < 20 ms at half the peak, GetMovie direct gRPC, three runs in a row",
            worst_p99("get-grpc-direct-1k-r1"),
            20.0,
            p99_detail("get-grpc-direct-1k-r1"),
            lower_is_better=True,
        ),
        TargetCheck(
            "p99 < 20 ms at half the peak, GetMovie JSON through Envoy, three runs in a row",
            worst_p99("get-json-envoy-1k-r1"),
            20.0,
            p99_detail("get-json-envoy-1k-r1"),
            lower_is_better=True,
        ),
        TargetCheck(
            "cinema up (two replicas, SQLite) healthy in < 3 s",
            slowest_start,
            3.0,
            ", ".join(f"{label} {v:.2f} s" for label, v in suite.startups.items()),
            lower_is_better=True,
            unit="s",
        ),
        TargetCheck(
            "resident memory of each service process < 80 MiB",
            largest,
            80.0,
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(services.items())) + " MiB",
            lower_is_better=True,
            unit="MiB",
        ),
    ]


def targets_table(suite: Suite) -> list[str]:
    lines = ["| target | this run | met? | figures |", "| --- | ---: | --- | --- |"]
    for target in targets(suite):
        value = (
            "-"
            if math.isnan(target.value)
            else (
                f"{target.value:.2f} {target.unit}"
                if target.lower_is_better
                else f"{target.value:.0%}"
            )
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
        "the CPU went, *inclusive* who asked for it. *transport thread* is the thread that "
        "drives gRPC's completion queue (grpcio's polling thread in the sync server; py-spy "
        "sees no frames inside grpc's Cython code).",
        "",
    ]
    for name, summary in suite.profiles.items():
        lines += [
            f"**{name}** ({summary.samples} samples; transport thread "
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
        "### Targets",
        "",
        *targets_table(suite),
        "",
        "### Serving models (A/B in one run, bench/serving.py)",
        "",
        "The same GetMovie handler body (use case, repository, engine, proto) under each "
        "serving model, and each model's own echo; `ratio` is against the one echo "
        "ceiling of this run (the echo stub on Cinema's adopted stack).",
        "",
        *serving_table(suite),
        "",
        "### Start-up and memory",
        "",
        *footprint_table(suite),
        "",
        "![throughput and p99 per path, Cinema beside the baseline](benchmarks.svg)",
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


#: The chart's rows: label, Cinema's run, the baseline's run on the same path (or None).
CHART_ROWS = (
    ("GET one movie, JSON at the front door", "get-json-envoy-1k-r1", "baseline-get-json"),
    ("GetMovie, gRPC through Envoy", "get-grpc-envoy-1k-r1", "baseline-get-json"),
    ("GetMovie, gRPC direct (one process)", "get-grpc-direct-1k-r1", None),
    ("CreateMovie (3 cast ids), JSON", "create-json-1k-r1", "baseline-create-json"),
    ("Buy: CreateOrder + PayOrder, JSON", "buy-json-1k-r1", None),
)


def chart(suite: Suite, subtitle: str) -> str:
    """Throughput and closed-loop p99 per path, Cinema beside the baseline (SVG)."""

    def figures(key: str | None) -> tuple[float, float]:
        found = suite.measurements.get(key) if key else None
        if found is None or not found.result.latency.total:
            return math.nan, math.nan
        return found.result.throughput, found.result.latency.percentile(99) / 1000

    rows = []
    for label, ours, theirs in CHART_ROWS:
        rate, p99 = figures(ours)
        if math.isnan(rate):
            continue
        base_rate, base_p99 = figures(theirs)
        # The gRPC row is compared with the baseline's JSON: it has no gRPC.
        rows.append(charts.PathFigures(label, rate, p99, base_rate, base_p99))
    return charts.render_svg(rows, subtitle)


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
            chart_path = args.output.with_name("benchmarks.svg")
            subtitle = f"{command}, {facts[0][1]}, {os.cpu_count()} CPUs, closed loop, 32 callers"
            chart_path.write_text(chart(suite, subtitle))
            print(f"\nwrote {args.output} and {chart_path}")
    return 0
