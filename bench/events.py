"""What events cost: ``python -m bench.events [--quick] [--no-write]``.

One run, on loopback only, that stops by itself. It starts a private ``nats-server``
(JetStream, a temporary store), four fresh PostgreSQL databases and these ``cinema serve``
processes, every one called directly on its port (no Envoy):

* ``cast``, ``movie``, ``order``: one process with events on and one with
  ``CINEMA_EVENTS=off`` each, the two on the same database;
* ``user`` (events on): the consumer of OrderPaid and MovieChanged, not measured itself;
* a second ``movie`` replica with events on, for the second throughput burst only.

Then, in this order:

1. **Throughput**, outbox -> JetStream -> consumer: ``--burst`` CastDeleted events written
   into the cast database's outbox in one transaction (through the services' own
   :class:`~services.common.events.store.Outbox`, with the casts deleted in the same
   transaction: exactly the rows DeleteCast writes), then one real DeleteCast whose commit
   wakes the relay. Each cast is named by one movie, so every effect rewrites a movie. The
   times come from the databases: the outbox's ``publish_time`` (relay) and the movie
   inbox's ``handle_time`` (consumer). Once with one movie replica, once with two.
2. **Lag** at a steady rate: DeleteCast in an open loop at each ``--lag-rates`` for
   ``--lag-seconds``. Commit -> effect per event from the databases (outbox
   ``create_time`` to inbox ``handle_time``, warm-up dropped), and the consumer's own
   ``cinema_event_lag_seconds`` histogram from /metrics (its change over the phase,
   quantiles interpolated inside the buckets as PromQL's ``histogram_quantile`` does).
3. **Cost to a write**: DeleteCast, UpdateMovie (a new price: MovieChanged), PayOrder
   (OrderPaid) and CreateMovie (no event: the control), each with events on and off, in
   interleaved rounds (the variant order alternating), closed loop, the suite's load
   generator. Before each measurement the run waits until every event is applied, so no
   measurement carries the consumers' backlog of the one before. The figures: successful
   calls/s, the on/off ratio of the medians, and the writer's CPU per call (its relay
   thread included).

Every phase also reports "other work": the share of the machine busy with processes this
run did not start (the machine may be shared). A phase with more than
:data:`FOREIGN_LIMIT` of it is done again, once, after the machine has quietened. A
SIGTERM unwinds the run like an error: its processes stop and its databases are dropped.

Writes ``docs/events-cost.svg`` and the tables between the ``bench-events`` markers of
``docs/benchmarks.md`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import html
import json
import math
import os
import pathlib
import random
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import grpc
import sqlalchemy
from google.protobuf import field_mask_pb2

from bench import catalogue, fixtures, pg, procfs, prometheus
from bench.clients import OK, GrpcClient, grpc_call
from bench.loadgen import LoadError, LoadPlan, LoadResult, run_load
from bench.processes import (
    Child,
    StartError,
    _wait_for_log,
    postgres_databases,
    spawn,
    start_cinema_serve,
)
from bench.scenarios import PAYMENT_TOKEN
from bench.seed import SEED_TIME, _copy, seed_movies
from bench.stats import LatencyHistogram
from bench.target import Target
from cinema.v1 import (
    cast_pb2,
    cast_pb2_grpc,
    events_pb2,
    money_pb2,
    movie_pb2,
    order_pb2,
    user_pb2,
    user_pb2_grpc,
)
from services.cast.models import EVENTS as CAST_EVENTS
from services.common.auth import TokenIssuer, ensure_keypair
from services.common.clock import as_utc, utc_now
from services.common.context import CALL_ID_METADATA, Role
from services.common.events import broker
from services.common.events.store import EventLog, Outbox
from services.common.ids import new_id

ROOT = pathlib.Path(__file__).resolve().parent.parent
DELETE_CAST = "/cinema.v1.CastService/DeleteCast"
UPDATE_MOVIE = "/cinema.v1.MovieService/UpdateMovie"
CREATE_MOVIE = "/cinema.v1.MovieService/CreateMovie"
PAY_ORDER = "/cinema.v1.OrderService/PayOrder"
OPERATIONS = ("DeleteCast", "UpdateMovie", "PayOrder", "CreateMovie")
#: What each operation emits (None: the control).
EMITS = {
    "DeleteCast": "CastDeleted",
    "UpdateMovie": "MovieChanged",
    "PayOrder": "OrderPaid",
    "CreateMovie": None,
}
VARIANTS = ("on", "off")
#: The service each write goes to.
WRITERS = {
    "DeleteCast": "cast",
    "UpdateMovie": "movie",
    "PayOrder": "order",
    "CreateMovie": "movie",
}
#: Single-use requests (casts to delete, orders to pay) per measurement: the fastest rate
#: a write could reach here, times the measured seconds plus warm-up and drain.
_RATE_CAP = 1500.0
#: A cost measurement during which other work took more of the machine is done again.
FOREIGN_LIMIT = 0.10
BEGIN = "<!-- bench-events:begin -->"
END = "<!-- bench-events:end -->"
CAST_DELETED = "cinema.v1.CastDeleted"


class Exhausted(RuntimeError):
    """The seeded single-use rows (casts to delete, orders to pay) ran out."""


# --- scenarios (pickled into the load generator's processes) --------------------------------


class _Writes:
    """Calls of one RPC, the next request each time, from a list a worker owns.

    Requests of single-use lists are never sent twice: once they run out, calls answer
    ``client:exhausted`` without reaching the server (and the report says so).
    """

    def __init__(
        self,
        client: GrpcClient,
        path: str,
        requests: Sequence[bytes] | Callable[[int], bytes],
        timeout: float,
        metadata: tuple[tuple[str, str], ...],
        *,
        cycle: bool,
        call_ids: bool = False,
    ) -> None:
        self._client = client
        self._callables = client.method(path)
        self._requests = requests
        self._timeout = timeout
        self._metadata = metadata
        self._cycle = cycle
        self._next = 0
        #: A new ``x-cinema-call-id`` on every call, as Envoy sends them (bench.repeats).
        self._call_prefix = uuid.uuid4().hex if call_ids else None

    async def __call__(self, index: int) -> str:
        number = self._next
        self._next += 1
        if callable(self._requests):
            request = self._requests(number)
        elif number < len(self._requests) or self._cycle:
            request = self._requests[number % len(self._requests)]
        else:
            return "client:exhausted"
        metadata = self._metadata
        if self._call_prefix is not None:
            metadata = (*metadata, (CALL_ID_METADATA, f"{self._call_prefix}-{number}"))
        status, _ = await grpc_call(
            self._callables, number, request, deadline=self._timeout, metadata=metadata
        )
        return status

    async def close(self) -> None:
        await self._client.close()


async def _opened(operation: _Writes, name: str) -> _Writes:
    status = await operation(0)
    if status != OK:
        await operation.close()
        raise RuntimeError(f"{name}: the first call failed with {status}")
    return operation


@dataclass(frozen=True)
class Writes:
    """Pre-encoded requests of one RPC; worker ``w`` of ``processes`` sends
    ``requests[w::processes]``, each once (or round and round with ``cycle``)."""

    target: Target
    path: str
    requests: tuple[bytes, ...]
    token: str
    processes: int
    name: str
    cycle: bool = False
    timeout: float = 5.0

    async def open(self, worker: int, callers: int) -> _Writes:
        client = GrpcClient(self.target, 2)
        await client.wait_ready(within=10.0)
        mine = self.requests if self.cycle else self.requests[worker :: self.processes]
        operation = _Writes(
            client, self.path, mine, self.timeout, _bearer(self.token), cycle=self.cycle
        )
        return await _opened(operation, self.name)


@dataclass(frozen=True)
class NewPrices:
    """UpdateMovie of the price only, a new price every call (so every call emits
    MovieChanged with events on); worker ``w`` updates ``movie_ids[w::processes]``.
    ``call_ids``: each call with a new gateway call id, so the service records it."""

    target: Target
    movie_ids: tuple[str, ...]
    token: str
    processes: int
    name: str = "UpdateMovie"
    timeout: float = 5.0
    call_ids: bool = False

    async def open(self, worker: int, callers: int) -> _Writes:
        client = GrpcClient(self.target, 2)
        await client.wait_ready(within=10.0)
        mine = self.movie_ids[worker :: self.processes]
        salt = random.randrange(10**6, 10**9)  # never the price a movie has now
        mask = field_mask_pb2.FieldMask(paths=["price"])

        def request(number: int) -> bytes:
            movie = movie_pb2.Movie(
                id=mine[number % len(mine)],
                price=money_pb2.Money(
                    currency_code=catalogue.PRICE_CURRENCY, amount_minor=salt + number
                ),
            )
            return movie_pb2.UpdateMovieRequest(movie=movie, update_mask=mask).SerializeToString()

        operation = _Writes(
            client,
            UPDATE_MOVIE,
            request,
            self.timeout,
            _bearer(self.token),
            cycle=True,
            call_ids=self.call_ids,
        )
        return await _opened(operation, self.name)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# --- seeding ---------------------------------------------------------------------------------


def seed_casts(database_url: str, count: int) -> list[str]:
    """``count`` cast members straight into the cast service's table; their ids."""
    ids = [new_id() for _ in range(count)]
    stamp = SEED_TIME.isoformat()
    connection = pg.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            _copy(
                cursor,
                "casts",
                ("id", "name", "nationality", "create_time", "update_time"),
                ((c, f"Benchmark actor {n}", "Nowhere", stamp, stamp) for n, c in enumerate(ids)),
            )
            cursor.execute("ANALYZE casts")
    finally:
        connection.close()
    return ids


def seed_movies_naming(database_url: str, cast_ids: Sequence[str]) -> list[str]:
    """One movie per cast member, naming that one only (the rows the service writes)."""
    ids = [new_id() for _ in cast_ids]
    stamp = SEED_TIME.isoformat()
    genres = json.dumps(list(catalogue.GENRES))
    connection = pg.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            _copy(
                cursor,
                "movies",
                (
                    "id",
                    "title",
                    "plot",
                    "genres",
                    "cast_ids",
                    "price_currency",
                    "price_amount_minor",
                    "create_time",
                    "update_time",
                ),
                (
                    (
                        m,
                        catalogue.title(n),
                        catalogue.PLOT,
                        genres,
                        json.dumps([c]),
                        catalogue.PRICE_CURRENCY,
                        str(catalogue.PRICE_MINOR),
                        stamp,
                        stamp,
                    )
                    for n, (m, c) in enumerate(zip(ids, cast_ids, strict=True))
                ),
            )
            _copy(
                cursor,
                "movie_genres",
                ("movie_id", "genre"),
                ((m, g) for m in ids for g in catalogue.GENRES),
            )
            _copy(
                cursor,
                "movie_casts",
                ("movie_id", "cast_id"),
                zip(ids, cast_ids, strict=True),
            )
            for table in ("movies", "movie_genres", "movie_casts"):
                cursor.execute(f"ANALYZE {table}")
    finally:
        connection.close()
    return ids


def seed_orders(database_url: str, user_id: str, movie_ids: Sequence[str], count: int) -> list[str]:
    """``count`` PENDING orders of ``user_id``, one copy of one movie each."""
    ids = [new_id() for _ in range(count)]
    stamp = SEED_TIME.isoformat()
    price = str(catalogue.PRICE_MINOR)
    currency = catalogue.PRICE_CURRENCY
    connection = pg.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            _copy(
                cursor,
                "orders",
                (
                    "id",
                    "user_id",
                    "request_id",
                    "request_hash",
                    "status",
                    "total_currency",
                    "total_amount_minor",
                    "create_time",
                    "update_time",
                ),
                (
                    (
                        o,
                        user_id,
                        f"bench-order-{n}",
                        hashlib.sha256(o.encode()).hexdigest(),
                        "PENDING",
                        currency,
                        price,
                        stamp,
                        stamp,
                    )
                    for n, o in enumerate(ids)
                ),
            )
            _copy(
                cursor,
                "order_items",
                (
                    "order_id",
                    "position",
                    "movie_id",
                    "title",
                    "quantity",
                    "unit_currency",
                    "unit_amount_minor",
                ),
                (
                    (
                        o,
                        "0",
                        movie_ids[n % len(movie_ids)],
                        catalogue.title(n),
                        "1",
                        currency,
                        price,
                    )
                    for n, o in enumerate(ids)
                ),
            )
            cursor.execute("ANALYZE orders")
            cursor.execute("ANALYZE order_items")
    finally:
        connection.close()
    return ids


# --- databases and /metrics ------------------------------------------------------------------


#: One autocommit connection per database for the run's own queries: polling with a new
#: connection each time would fork a PostgreSQL backend every 50 ms.
_CONNECTIONS: dict[str, Any] = {}


def _cursor(database_url: str) -> Any:
    connection = _CONNECTIONS.get(database_url)
    if connection is None or connection.closed:
        connection = _CONNECTIONS[database_url] = pg.connect(database_url, autocommit=True)
    return connection.cursor()


def close_connections() -> None:
    for connection in _CONNECTIONS.values():
        with contextlib.suppress(Exception):
            connection.close()
    _CONNECTIONS.clear()


def _one(database_url: str, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    with _cursor(database_url) as cursor:
        cursor.execute(sql, tuple(params))
        row = cursor.fetchone()
        return tuple(row) if row else ()


def _all(database_url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with _cursor(database_url) as cursor:
        cursor.execute(sql, tuple(params))
        return [tuple(row) for row in cursor.fetchall()]


def relay_batch(database_url: str, since: dt.datetime) -> float:
    """Mean events per relay batch among the events created since ``since``: the rows of
    one batch are marked published in one statement, with one ``publish_time``."""
    events, batches = _one(
        database_url,
        "SELECT count(*), count(DISTINCT publish_time) FROM outbox WHERE create_time >= %s",
        [since],
    )
    return events / batches if batches else math.nan


def machine_jiffies(stat: str | None = None) -> tuple[int, int]:
    """Busy and total jiffies of all CPUs from the first line of /proc/stat. Interrupts
    are left out of busy: on loopback they serve this run's own packets, and no process
    is charged for them. Time the hypervisor steals counts as busy (as other work)."""
    line = stat if stat is not None else pathlib.Path("/proc/stat").read_text()
    values = [int(v) for v in line.splitlines()[0].split()[1:9]]
    values += [0] * (8 - len(values))
    user, nice, system, steal = values[0], values[1], values[2], values[7]
    return user + nice + system + steal, sum(values)


def postgres_helpers() -> list[int]:
    """Pids of the PostgreSQL server's own processes: the postmaster, WAL writer,
    checkpointer, background writer, autovacuum (not client backends)."""
    helpers = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical rep")
    pids: list[int] = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        words = title.split()
        if (words[:1] == ["postgres:"] and any(h in title for h in helpers)) or (
            words and words[0].endswith("/bin/postgres")
        ):
            pids.append(int(entry.name))
    return pids


def foreign_share(busy: float, own_cpu_seconds: float, seconds: float, cpus: int) -> float:
    """The share of the machine (0..1) busy with work this run did not start: the busy
    share of all CPUs minus this run's own CPU seconds spread over them."""
    if seconds <= 0 or cpus <= 0 or math.isnan(busy):
        return math.nan
    return max(busy - own_cpu_seconds / (seconds * cpus), 0.0)


def scrape(port: int) -> list[prometheus.Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return prometheus.parse(reply.read().decode())


def applied(samples: Sequence[prometheus.Sample], consumer: str) -> float:
    return prometheus.total(
        samples, "cinema_events_handled_total", consumer=consumer, outcome="applied"
    )


# --- results ---------------------------------------------------------------------------------


@dataclass
class Burst:
    """One burst of CastDeleted events through relay, JetStream and the movie consumer."""

    replicas: int
    events: int
    #: Seconds from the commit of the burst to: the first publish, the last publish, the
    #: first effect, the last effect.
    first_publish: float
    last_publish: float
    first_effect: float
    last_effect: float
    #: Events each movie replica applied (its /metrics counter), in replica order.
    split: list[float] = field(default_factory=list)
    #: Share of the machine busy with work this run did not start, meanwhile.
    foreign: float = math.nan

    @property
    def end_to_end_rate(self) -> float:
        return self.events / self.last_effect if self.last_effect > 0 else math.nan

    @property
    def relay_rate(self) -> float:
        span = self.last_publish - self.first_publish
        return self.events / span if span > 0 else math.nan

    @property
    def consumer_rate(self) -> float:
        span = self.last_effect - self.first_effect
        return self.events / span if span > 0 else math.nan


@dataclass
class Lag:
    """Commit -> effect at a steady rate of DeleteCast calls."""

    rate: float
    achieved: float
    events: int
    #: Per event from the databases (outbox create_time -> inbox handle_time), ms.
    db: LatencyHistogram
    #: Commit -> published (outbox create_time -> publish_time): the relay's share.
    publish: LatencyHistogram
    #: The consumer's cinema_event_lag_seconds change over the phase.
    buckets: prometheus.Buckets
    call_p50_ms: float
    call_p99_ms: float
    #: Events per relay batch (rows marked published together).
    batch: float
    failed: dict[str, int]
    #: Share of the machine busy with work this run did not start, in the window.
    foreign: float = math.nan


@dataclass
class Measurement:
    operation: str
    variant: str
    rate: float
    writer_cpu_us: float
    #: Everything else the run started (consumers, nats-server, PostgreSQL backends).
    others_cpu_us: float
    #: Events per relay batch (events on).
    batch: float
    failed: dict[str, int]
    #: Share of the machine busy with work this run did not start, in the window.
    foreign: float = math.nan


@dataclass
class Report:
    facts: list[tuple[str, str]]
    bursts: list[Burst] = field(default_factory=list)
    lags: list[Lag] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    rounds: int = 0
    duration: float = 0.0
    concurrency: int = 0

    def rates(self, operation: str, variant: str) -> list[float]:
        return [
            m.rate for m in self.measurements if (m.operation, m.variant) == (operation, variant)
        ]

    def most_foreign(self, operation: str) -> float:
        values = [
            m.foreign
            for m in self.measurements
            if m.operation == operation and not math.isnan(m.foreign)
        ]
        return max(values, default=math.nan)

    def median(self, operation: str, variant: str, pick: str = "rate") -> float:
        values = [
            getattr(m, pick)
            for m in self.measurements
            if (m.operation, m.variant) == (operation, variant) and not math.isnan(getattr(m, pick))
        ]
        return statistics.median(values) if values else math.nan


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool
    rounds: int
    duration: float
    warmup: float
    concurrency: int
    burst: int
    lag_rates: tuple[float, ...]
    lag_seconds: float
    postgres_url: str | None
    work_dir: pathlib.Path


class Bench:
    """Everything one run started, and what it has used of its seeded rows."""

    def __init__(self, options: Options, stack: contextlib.ExitStack) -> None:
        self.options = options
        self.stack = stack
        self.work = options.work_dir
        private_key, public_key = ensure_keypair(self.work / "keys")
        self.admin_token = fixtures.mint_admin_token(self.work / "keys")
        self._issuer = TokenIssuer(
            private_key.read_bytes(), issuer="cinema", audience="cinema", ttl_seconds=3600
        )
        self.children: dict[str, Child] = {}
        self.metrics_ports: dict[str, int] = {}
        self.nats = self._start_nats()
        self.databases, self.urls = stack.enter_context(
            postgres_databases(["cast", "movie", "user", "order"], options.postgres_url)
        )
        stack.callback(close_connections)
        self.base_env = {
            "CINEMA_JWT_PUBLIC_KEY_FILE": str(public_key),
            "NATS_URL": f"nats://127.0.0.1:{self.nats.port}",
            "CINEMA_DATA_DIR": str(self.work / "data"),
            # No measured call asks a peer: UpdateMovie of a price and CreateMovie without
            # cast ids check no cast, PayOrder asks nobody.
            "CAST_SERVICE_ADDR": "127.0.0.1:1",
            "MOVIE_SERVICE_ADDR": "127.0.0.1:1",
            "USER_SERVICE_ADDR": "127.0.0.1:1",
            "CINEMA_JWT_PRIVATE_KEY_FILE": "",
        }
        self._private_key = private_key
        self.named: list[str] = []  # casts named by one movie each (bursts, lag)
        self.unnamed: list[str] = []  # casts no movie names (DeleteCast's cost)
        self.update_movies: tuple[str, ...] = ()
        self.orders: list[str] = []
        self.user_id = ""
        self.user_token = ""

    # -- processes ----------------------------------------------------------------------

    def _start_nats(self) -> Child:
        argv = broker.server_argv(self.work / "nats")
        child = spawn("nats", argv, self.work / "logs" / "nats.log")
        self.stack.callback(child.stop, 5)
        child.port = int(_wait_for_log(child, broker.LISTENING.pattern, 30).group(1))
        self.children["nats"] = child
        return child

    def _env(self, service: str, variant: str) -> dict[str, str]:
        env = dict(self.base_env)
        env["DATABASE_URL"] = self.urls[service]
        env["CINEMA_EVENTS"] = "off" if variant == "off" else "on"
        if service == "user":
            env["CINEMA_JWT_PRIVATE_KEY_FILE"] = str(self._private_key)
            # One account is registered, by the run itself: no need for costly hashes.
            env |= {
                "CINEMA_ARGON2_TIME_COST": "1",
                "CINEMA_ARGON2_MEMORY_KIB": "1024",
                "CINEMA_ARGON2_PARALLELISM": "1",
            }
        else:
            del env["CINEMA_JWT_PRIVATE_KEY_FILE"]
        return env

    def start(self, names: Sequence[str]) -> None:
        """Start ``service-variant`` processes (``movie-on-2``: a second replica), at once."""

        def one(name: str) -> tuple[str, Child]:
            service, variant = name.split("-")[:2]
            child = start_cinema_serve(
                service, self._env(service, variant), self.work / "logs", name
            )
            return name, child

        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            futures = [pool.submit(one, name) for name in names]
        failures: list[BaseException] = []
        for future in futures:  # every one that started is stopped at the end
            error = future.exception()
            if error is not None:
                failures.append(error)
                continue
            name, child = future.result()
            self.children[name] = child
            self.stack.callback(child.stop, 10)
            match = re.search(r"metrics on port (\d+)", child.log_path.read_text())
            if match is None:
                failures.append(StartError(f"{name} logged no metrics port"))
            else:
                self.metrics_ports[name] = int(match.group(1))
        if failures:
            raise failures[0]

    def stop(self, name: str) -> None:
        self.children.pop(name).stop(timeout=10)
        self.metrics_ports.pop(name, None)

    def postgres(self) -> list[int]:
        """The backends of this run's databases, and the server's own processes (WAL
        writer, checkpointer...), which work for whoever commits: here, mostly this run."""
        return procfs.postgres_backends(self.databases.prefix) + postgres_helpers()

    def own(self) -> dict[str, list[int]]:
        """This run's processes: itself, the services, nats-server, PostgreSQL's share."""
        return {
            "run": [os.getpid()],
            "services": [c.pid for c in self.children.values()],
            "postgres": self.postgres(),
        }

    @contextlib.contextmanager
    def metered(self) -> Iterator[list[float]]:
        """The share of the machine busy with foreign work while the block ran (appended
        to the list it yields when the block ends)."""
        out: list[float] = []
        groups = self.own()
        machine, cpu, started = machine_jiffies(), procfs.cpu_snapshot(groups), time.monotonic()
        yield out
        own = sum(procfs.cpu_delta(cpu, procfs.cpu_snapshot(groups)).values())
        after = machine_jiffies()
        busy = (after[0] - machine[0]) / max(after[1] - machine[1], 1)
        out.append(foreign_share(busy, own, time.monotonic() - started, os.cpu_count() or 1))

    def wait_machine_quiet(self, timeout: float = 45.0) -> float:
        """Wait (up to ``timeout``) until foreign work takes under 5 % of the machine."""
        deadline = time.monotonic() + timeout
        share = math.nan
        while time.monotonic() < deadline:
            with self.metered() as meter:
                time.sleep(2.0)
            share = meter[0]
            if share < 0.05:
                break
        return share

    def target(self, name: str) -> Target:
        return Target("127.0.0.1", self.children[name].port)

    def pids(self, *names: str) -> list[int]:
        return [self.children[n].pid for n in names if n in self.children]

    # -- fixtures -----------------------------------------------------------------------

    def seed(self, named: int, unnamed: int, orders: int) -> None:
        self.named = seed_casts(self.urls["cast"], named)
        self.unnamed = seed_casts(self.urls["cast"], unnamed)
        seed_movies_naming(self.urls["movie"], self.named)
        self.update_movies = tuple(seed_movies(self.urls["movie"], 2000, ()))
        with grpc.insecure_channel(self.target("user-on").address) as channel:
            user = user_pb2_grpc.UserServiceStub(channel).CreateUser(
                user_pb2.CreateUserRequest(
                    user=user_pb2.User(
                        email=f"buyer-{new_id()}@cinema.test",
                        display_name="Benchmark buyer",
                        password=new_id(),
                    )
                ),
                metadata=_bearer(self.admin_token),
                timeout=30,
            )
        self.user_id = user.id
        self.user_token = self._issuer.issue(user.id, Role.USER).token
        self.orders = seed_orders(self.urls["order"], user.id, self.update_movies, orders)

    def take(self, pool: list[str], count: int) -> list[str]:
        if count > len(pool):
            raise Exhausted(f"the run seeded too few rows: {count} wanted, {len(pool)} left")
        taken = pool[:count]
        del pool[:count]
        return taken

    # -- waiting for the consumers -------------------------------------------------------

    def backlog(self) -> int:
        """Events written but not applied yet, over every outbox and consumer."""
        cast_out, cast_unsent = _one(
            self.urls["cast"], "SELECT count(*), count(*) - count(publish_time) FROM outbox"
        )
        movie_out, movie_unsent = _one(
            self.urls["movie"], "SELECT count(*), count(*) - count(publish_time) FROM outbox"
        )
        order_out, order_unsent = _one(
            self.urls["order"], "SELECT count(*), count(*) - count(publish_time) FROM outbox"
        )
        (movie_in,) = _one(
            self.urls["movie"], "SELECT count(*) FROM inbox WHERE consumer = 'movie'"
        )
        (user_in,) = _one(self.urls["user"], "SELECT count(*) FROM inbox WHERE consumer = 'user'")
        return int(
            max(cast_out - movie_in, 0)
            + max(movie_out + order_out - user_in, 0)
            + cast_unsent
            + movie_unsent
            + order_unsent
        )

    def wait_quiet(self, timeout: float = 90.0) -> float:
        """Wait until every event written so far is applied; the seconds it took."""
        started = time.monotonic()
        while True:
            left = self.backlog()
            if left == 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                print(f"  warning: {left} events still not applied after {timeout:.0f}s")
                return time.monotonic() - started
            time.sleep(0.2)

    # -- 1. throughput -------------------------------------------------------------------

    def burst(self, events: int, movie_replicas: Sequence[str]) -> Burst:
        self.wait_quiet()
        casts = self.take(self.named, events + 1)
        casts, trigger = casts[:-1], casts[-1]
        (inbox_before,) = _one(
            self.urls["movie"], "SELECT count(*) FROM inbox WHERE consumer = 'movie'"
        )
        applied_before = [applied(scrape(self.metrics_ports[n]), "movie") for n in movie_replicas]
        engine = sqlalchemy.create_engine(self.urls["cast"])
        ids: list[str] = []
        channel = grpc.insecure_channel(self.target("cast-on").address)
        try:
            delete_cast = cast_pb2_grpc.CastServiceStub(channel).DeleteCast
            grpc.channel_ready_future(channel).result(timeout=10)
            with engine.begin() as connection:
                connection.execute(
                    sqlalchemy.text("DELETE FROM casts WHERE id = ANY(:ids)"), {"ids": casts}
                )
                outbox = Outbox(connection, EventLog(CAST_EVENTS))
                now = utc_now()
                for cast_id in casts:
                    event = events_pb2.CastDeleted(cast_id=cast_id)
                    outbox.add(event, now)
                    ids.append(event.event_id)
            committed = utc_now()
            # One real DeleteCast: its commit wakes the relay, which publishes the burst.
            delete_cast(
                cast_pb2.DeleteCastRequest(id=trigger),
                metadata=_bearer(self.admin_token),
                timeout=10,
            )
        finally:
            channel.close()
            engine.dispose()
        deadline = time.monotonic() + 180
        with self.metered() as meter:
            while True:
                (inbox_now,) = _one(
                    self.urls["movie"], "SELECT count(*) FROM inbox WHERE consumer = 'movie'"
                )
                if inbox_now >= inbox_before + events + 1:
                    # The count says so; make sure it is these events (cheap once).
                    (mine,) = _one(
                        self.urls["movie"],
                        "SELECT count(*) FROM inbox WHERE consumer = 'movie' "
                        "AND event_id = ANY(%s)",
                        [ids],
                    )
                    if mine >= events:
                        break
                    print(
                        f"  warning: the movie inbox grew by {inbox_now - inbox_before} but "
                        f"holds {mine} of the burst's {events} events"
                    )
                    inbox_before = inbox_now - mine - 1
                if time.monotonic() > deadline:
                    raise RuntimeError(f"burst: {inbox_now - inbox_before} of {events + 1} in")
                time.sleep(0.05)
        first_pub, last_pub = _one(
            self.urls["cast"],
            "SELECT min(publish_time), max(publish_time) FROM outbox WHERE id = ANY(%s)",
            [ids],
        )
        first_fx, last_fx = _one(
            self.urls["movie"],
            "SELECT min(handle_time), max(handle_time) FROM inbox WHERE event_id = ANY(%s)",
            [ids],
        )
        (left,) = _one(
            self.urls["movie"], "SELECT count(*) FROM movie_casts WHERE cast_id = ANY(%s)", [casts]
        )
        if left:
            print(f"  warning: {left} movies still name a deleted cast member")

        def since(moment: dt.datetime) -> float:
            return (as_utc(moment) - committed).total_seconds()

        split = [
            applied(scrape(self.metrics_ports[n]), "movie") - before
            for n, before in zip(movie_replicas, applied_before, strict=True)
        ]
        return Burst(
            len(movie_replicas),
            events,
            since(first_pub),
            since(last_pub),
            since(first_fx),
            since(last_fx),
            split,
            meter[0],
        )

    # -- 2. lag ---------------------------------------------------------------------------

    def lag(self, rate: float, seconds: float) -> Lag:
        self.wait_quiet()
        warmup = 2.0
        count = math.ceil(rate * (seconds + warmup) * 1.1) + 50
        casts = self.take(self.named, count)
        scenario = Writes(
            self.target("cast-on"),
            DELETE_CAST,
            tuple(cast_pb2.DeleteCastRequest(id=c).SerializeToString() for c in casts),
            self.admin_token,
            processes=1,
            name="DeleteCast",
        )
        port = self.metrics_ports["movie-on"]
        before = prometheus.buckets(
            scrape(port), "cinema_event_lag_seconds", consumer="movie", event=CAST_DELETED
        )
        started = utc_now()
        plan = LoadPlan(
            mode="open", rate=rate, duration=seconds, warmup=warmup, processes=1, timeout=5.0
        )
        result = run_load(scenario, plan, watch=self.own, probes=MACHINE_PROBES)
        self.wait_quiet()
        after = prometheus.buckets(
            scrape(port), "cinema_event_lag_seconds", consumer="movie", event=CAST_DELETED
        )
        created = _all(
            self.urls["cast"],
            "SELECT id, create_time, publish_time FROM outbox WHERE create_time >= %s "
            "ORDER BY create_time",
            [started],
        )
        handled = dict(
            _all(
                self.urls["movie"],
                "SELECT event_id, handle_time FROM inbox WHERE event_id = ANY(%s)",
                [[row[0] for row in created]],
            )
        )
        effect, publish = LatencyHistogram(), LatencyHistogram()
        if created:
            # Dropped like the generator's warm-up; /metrics counts these too.
            warm_end = as_utc(created[0][1]) + dt.timedelta(seconds=warmup)
            for event_id, create_time, publish_time in created:
                if as_utc(create_time) < warm_end or event_id not in handled:
                    continue
                effect.record_seconds((as_utc(handled[event_id]) - create_time).total_seconds())
                publish.record_seconds((as_utc(publish_time) - create_time).total_seconds())
        return Lag(
            rate,
            result.throughput,
            effect.total,
            effect,
            publish,
            prometheus.bucket_delta(after, before),
            result.latency.percentile(50) / 1000,
            result.latency.percentile(99) / 1000,
            relay_batch(self.urls["cast"], started),
            result.failed,
            _foreign(result),
        )

    # -- 3. cost --------------------------------------------------------------------------

    def scenario(self, operation: str, variant: str, processes: int) -> Any:
        o = self.options
        single_use = math.ceil(_RATE_CAP * (o.warmup + o.duration + 2))
        if operation == "DeleteCast":
            casts = self.take(self.unnamed, single_use)
            return Writes(
                self.target(f"cast-{variant}"),
                DELETE_CAST,
                tuple(cast_pb2.DeleteCastRequest(id=c).SerializeToString() for c in casts),
                self.admin_token,
                processes,
                operation,
            )
        if operation == "UpdateMovie":
            return NewPrices(
                self.target(f"movie-{variant}"), self.update_movies, self.admin_token, processes
            )
        if operation == "PayOrder":
            orders = self.take(self.orders, single_use)
            return Writes(
                self.target(f"order-{variant}"),
                PAY_ORDER,
                tuple(
                    order_pb2.PayOrderRequest(
                        id=o, payment_token=PAYMENT_TOKEN, request_id=f"pay-{o}"
                    ).SerializeToString()
                    for o in orders
                ),
                self.user_token,
                processes,
                operation,
            )
        requests = tuple(
            movie_pb2.CreateMovieRequest(
                movie=movie_pb2.Movie(
                    title=catalogue.title(n),
                    plot=catalogue.PLOT,
                    genres=catalogue.GENRES,
                    price=money_pb2.Money(
                        currency_code=catalogue.PRICE_CURRENCY, amount_minor=catalogue.PRICE_MINOR
                    ),
                )
            ).SerializeToString()
            for n in range(100)
        )
        return Writes(
            self.target(f"movie-{variant}"),
            CREATE_MOVIE,
            requests,
            self.admin_token,
            processes,
            operation,
            cycle=True,
        )

    def measure(self, operation: str, variant: str) -> Measurement:
        self.wait_quiet()
        o = self.options
        plan = LoadPlan(
            concurrency=o.concurrency, duration=o.duration, warmup=o.warmup, processes=2
        )
        service = WRITERS[operation]
        writer = f"{service}-{variant}"
        others = [n for n in self.children if n != writer]

        def watch() -> dict[str, list[int]]:
            return {
                "writer": self.pids(writer),
                "others": self.pids(*others) + self.postgres(),
                "run": [os.getpid()],
            }

        started = utc_now()
        result: LoadResult = run_load(
            self.scenario(operation, variant, 2), plan, watch=watch, probes=MACHINE_PROBES
        )
        batch = math.nan
        if variant == "on" and EMITS[operation] is not None:
            self.wait_quiet()
            batch = relay_batch(self.urls[service], started)
        cpu = result.process_cpu_seconds
        calls = result.ok
        return Measurement(
            operation,
            variant,
            result.throughput,
            cpu.get("writer", math.nan) * 1e6 / calls if calls else math.nan,
            cpu.get("others", math.nan) * 1e6 / calls if calls else math.nan,
            batch,
            result.failed,
            _foreign(result),
        )


#: Probes for run_load: the machine's busy and total jiffies (changes over the window).
MACHINE_PROBES: dict[str, Callable[[], float]] = {
    "busy": lambda: float(machine_jiffies()[0]),
    "total": lambda: float(machine_jiffies()[1]),
}


def _foreign(result: LoadResult) -> float:
    """The foreign share of the machine in a load run's window: its busy share less the
    watched processes and the load generator (whose CPU also covers the warm-up)."""
    plan = result.plan
    client = result.client_cpu_seconds * plan.duration / (plan.duration + plan.warmup)
    own = sum(result.process_cpu_seconds.values()) + client
    total = result.probes.get("total", 0.0)
    busy = result.probes.get("busy", math.nan) / total if total > 0 else math.nan
    return foreign_share(busy, own, result.window, os.cpu_count() or 1)


def _facts(command: str) -> list[tuple[str, str]]:
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
    load = procfs.load_average()
    return [
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("command", command),
        ("CPUs (nproc)", str(os.cpu_count())),
        ("CPU model", cpu_model),
        ("memory", memory),
        ("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"),
    ]


T = TypeVar("T", Burst, Lag, Measurement)


def _quiet_once_more(bench: Bench, what: str, measure: Callable[[], T]) -> T:
    """``measure()``; again once if the load generator failed (a worker that could not
    start, say), or if other work took more than :data:`FOREIGN_LIMIT` of the machine
    meanwhile (then after waiting for quiet). The seeded rows include spares for that."""
    try:
        result = measure()
    except LoadError as error:
        print(f"  {what}: the load generator failed; once more ({error})")
        return measure()
    if result.foreign > FOREIGN_LIMIT:
        print(f"  {what}: {result.foreign:.0%} of the machine was busy with other work; once more")
        bench.wait_machine_quiet()
        try:
            result = measure()
        except Exhausted:
            print("  no seeded rows left for another try: the first one stands")
    return result


def run(options: Options, report: Report) -> None:
    with contextlib.ExitStack() as stack:
        bench = Bench(options, stack)
        print(f"nats-server on port {bench.nats.port}; starting the services")
        # The first process of each database runs its migrations; the others start after.
        bench.start(["cast-on", "movie-on", "user-on", "order-on"])
        bench.start(["cast-off", "movie-off", "order-off"])
        single_use = math.ceil(_RATE_CAP * (options.warmup + options.duration + 2))
        lag_casts = sum(
            math.ceil(r * (options.lag_seconds + 2.0) * 1.1) + 50 for r in options.lag_rates
        )
        per_variant = single_use * (options.rounds + 2)  # spare slices: retries
        bench.seed(
            named=2 * (2 * (options.burst + 1) + lag_casts),  # twice: spares for retries
            unnamed=2 * per_variant,
            orders=2 * per_variant,
        )
        print(f"seeded; logs in {bench.work / 'logs'}")

        print("\n1. throughput: a burst of CastDeleted through relay, JetStream, consumer")
        for replicas in (1, 2):
            names = ["movie-on"] + (["movie-on-2"] if replicas == 2 else [])
            if replicas == 2:
                bench.start(["movie-on-2"])
                time.sleep(1.0)  # its consumer binds
            burst = _quiet_once_more(
                bench, f"burst, {replicas} replicas", partial(bench.burst, options.burst, names)
            )
            report.bursts.append(burst)
            print(
                f"  {replicas} movie replica(s): {burst.events} events, last effect "
                f"{burst.last_effect:.2f}s after the commit = {burst.end_to_end_rate:.0f}/s; "
                f"relay {burst.relay_rate:.0f}/s (first publish +{burst.first_publish:.2f}s), "
                f"consumer {burst.consumer_rate:.0f}/s, split {[round(s) for s in burst.split]}, "
                f"other work {burst.foreign:.0%}"
            )
            if replicas == 2:
                bench.stop("movie-on-2")

        print("\n2. lag commit -> effect, DeleteCast at a steady rate")
        for rate in options.lag_rates:
            lag = _quiet_once_more(
                bench, f"lag at {rate:.0f}/s", partial(bench.lag, rate, options.lag_seconds)
            )
            report.lags.append(lag)
            print(
                f"  {rate:.0f}/s (sent {lag.achieved:.0f}/s, {lag.events} events): effect p50 "
                f"{lag.db.percentile(50) / 1000:.1f} ms p99 {lag.db.percentile(99) / 1000:.1f} ms "
                f"max {lag.db.maximum / 1000:.1f} ms; published p50 "
                f"{lag.publish.percentile(50) / 1000:.1f} ms p99 "
                f"{lag.publish.percentile(99) / 1000:.1f} ms; /metrics p50 "
                f"{prometheus.quantile(0.5, lag.buckets) * 1000:.1f} ms p99 "
                f"{prometheus.quantile(0.99, lag.buckets) * 1000:.1f} ms; "
                f"{lag.batch:.1f} events/relay batch; DeleteCast p99 {lag.call_p99_ms:.1f} ms; "
                f"other work {lag.foreign:.0%} {lag.failed or ''}"
            )

        print("\n3. what events cost a write (closed loop, direct)")
        for round_number in range(options.rounds):
            for operation in OPERATIONS:
                order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    m = _quiet_once_more(
                        bench,
                        f"{operation} events {variant}",
                        partial(bench.measure, operation, variant),
                    )
                    report.measurements.append(m)
                    print(
                        f"  round {round_number + 1} {operation:<12} events {variant:<3} "
                        f"{m.rate:7.0f}/s  writer {m.writer_cpu_us:6.0f} µs/call  "
                        f"others {m.others_cpu_us:6.0f} µs/call  "
                        f"{m.batch:4.1f} events/relay batch  other work {m.foreign:4.0%} "
                        f"{m.failed or ''}"
                    )
        bench.wait_quiet()


# --- report ----------------------------------------------------------------------------------


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.1f}"


def _n(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def markdown(report: Report) -> str:
    lines = [BEGIN, "", "| | |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in report.facts]
    lines += [
        "",
        "Throughput: a burst of CastDeleted events committed in one transaction, each naming"
        " a cast member one movie names (seconds from the commit; rates over the spans).",
        "",
        "| movie replicas | events | first publish | last publish | first effect | "
        "last effect | end to end | relay | consumer | applied per replica | other work |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for b in report.bursts:
        lines.append(
            f"| {b.replicas} | {b.events:,} | {b.first_publish:.2f} s | {b.last_publish:.2f} s "
            f"| {b.first_effect:.2f} s | {b.last_effect:.2f} s | {_n(b.end_to_end_rate)}/s | "
            f"{_n(b.relay_rate)}/s | {_n(b.consumer_rate)}/s | "
            f"{' + '.join(f'{s:,.0f}' for s in b.split)} | {_share(b.foreign)} |"
        )
    lines += [
        "",
        "Lag, DeleteCast in an open loop, in ms. Per event, from the databases (warm-up "
        "dropped): outbox `create_time` to the movie inbox's `handle_time` (effect) and to "
        "the outbox's `publish_time` (published). /metrics: the consumer's "
        "`cinema_event_lag_seconds` (commit to ack) over the whole phase, interpolated "
        "inside its buckets (2.5, 5, 7.5, 10, 15, 20, 30, 50, 75, 100 ms...).",
        "",
        "| rate | events | effect p50 | effect p99 | effect max | published p50 | "
        "published p99 | /metrics p50 | /metrics p99 | events per relay batch | "
        "DeleteCast p50 / p99 | other work |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lag in report.lags:
        lines.append(
            f"| {lag.rate:.0f}/s | {lag.events:,} | {_ms(lag.db.percentile(50) / 1e6)} | "
            f"{_ms(lag.db.percentile(99) / 1e6)} | {_ms(lag.db.maximum / 1e6)} | "
            f"{_ms(lag.publish.percentile(50) / 1e6)} | {_ms(lag.publish.percentile(99) / 1e6)} | "
            f"{_ms(prometheus.quantile(0.5, lag.buckets))} | "
            f"{_ms(prometheus.quantile(0.99, lag.buckets))} | {_n(lag.batch, 1)} | "
            f"{lag.call_p50_ms:.1f} / {lag.call_p99_ms:.1f} | {_share(lag.foreign)} |"
        )
    lines += [
        "",
        f"Cost to a write: closed loop, {report.concurrency} callers, {report.rounds} rounds "
        f"of {report.duration:g} s per variant, median calls/s; CPU per call of the writing "
        "process (its relay thread included) and of everything else the run started "
        "(consumers, nats-server, PostgreSQL backends), inside the window.",
        "",
        "| write | emits | events off | events on | on / off | writer CPU off | "
        "writer CPU on | others' CPU off | others' CPU on | events per relay batch | "
        "each round, on (off) | other work, most |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for operation in OPERATIONS:
        off, on = report.median(operation, "off"), report.median(operation, "on")
        ratio = on / off if off > 0 else math.nan
        emits = EMITS[operation] or "nothing (control)"
        lines.append(
            f"| {operation} | {emits} | {_n(off)}/s | {_n(on)}/s | {_n(ratio, 2)} | "
            f"{_n(report.median(operation, 'off', 'writer_cpu_us'))} µs | "
            f"{_n(report.median(operation, 'on', 'writer_cpu_us'))} µs | "
            f"{_n(report.median(operation, 'off', 'others_cpu_us'))} µs | "
            f"{_n(report.median(operation, 'on', 'others_cpu_us'))} µs | "
            f"{_n(report.median(operation, 'on', 'batch'), 1)} | "
            f"{', '.join(f'{r:,.0f}' for r in report.rates(operation, 'on'))} "
            f"({', '.join(f'{r:,.0f}' for r in report.rates(operation, 'off'))}) | "
            f"{_share(report.most_foreign(operation))} |"
        )
    failed: dict[str, int] = {}
    for m in report.measurements:
        for status, count in m.failed.items():
            failed[status] = failed.get(status, 0) + count
    lines += [
        "",
        f"Failed calls in the cost rounds: {failed or 'none'}. Other work: the share of the "
        "machine busy with processes this run did not start (a measurement above "
        f"{FOREIGN_LIMIT:.0%} is done again once the machine is quiet).",
        "",
        END,
    ]
    return "\n".join(lines)


def svg(report: Report) -> str:
    """Paired bars per write: calls/s with events off and on, labelled with the ratio."""
    rows = []
    values = [report.median(o, v) for o in OPERATIONS for v in VARIANTS]
    top = max((v for v in values if not math.isnan(v)), default=1.0)
    colours = {"off": "#9aa7b8", "on": "#2f6db5"}
    y = 60
    for operation in OPERATIONS:
        off = report.median(operation, "off")
        label = f"{operation} ({EMITS[operation] or 'no event'})"
        rows.append(f'<text x="10" y="{y + 22}" font-size="12">{html.escape(label)}</text>')
        for variant in ("off", "on"):
            value = report.median(operation, variant)
            if math.isnan(value):
                y += 20
                continue
            width = 330 * value / top
            text = f"{value:,.0f}/s"
            if variant == "on" and off > 0:
                text += f" ({value / off:.2f} of off)"
            rows.append(
                f'<rect x="210" y="{y}" width="{width:.1f}" height="16" '
                f'fill="{colours[variant]}"/><text x="{216 + width:.1f}" y="{y + 12}" '
                f'font-size="11">{html.escape(text)}</text>'
            )
            y += 20
        y += 12
    lines = []
    for b in report.bursts:
        lines.append(
            f"burst of {b.events:,}: {b.end_to_end_rate:,.0f} events/s commit to last effect "
            f"with {b.replicas} movie replica{'s' if b.replicas > 1 else ''}"
        )
    for lag in report.lags:
        lines.append(
            f"lag at {lag.rate:.0f}/s: p50 {lag.db.percentile(50) / 1000:.1f} ms, "
            f"p99 {lag.db.percentile(99) / 1000:.1f} ms (per event)"
        )
    notes = "".join(
        f'<text x="10" y="{y + 14 + 16 * i}" font-size="11">{html.escape(t)}</text>'
        for i, t in enumerate(lines)
    )
    height = y + 24 + 16 * len(lines)
    subtitle = (
        f"closed loop, {report.concurrency} callers, direct gRPC, median of {report.rounds} "
        f"rounds; {report.facts[0][1]}, {os.cpu_count()} CPUs"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="700" height="{height}" '
        f'viewBox="0 0 700 {height}" font-family="sans-serif">'
        f'<rect width="700" height="{height}" fill="white"/>'
        '<text x="10" y="20" font-size="14" font-weight="bold">What events cost a write'
        f'</text><text x="10" y="38" font-size="11">{html.escape(subtitle)}</text>'
        f'<rect x="520" y="10" width="10" height="10" fill="{colours["off"]}"/>'
        '<text x="534" y="19" font-size="11">CINEMA_EVENTS=off</text>'
        f'<rect x="520" y="26" width="10" height="10" fill="{colours["on"]}"/>'
        '<text x="534" y="35" font-size="11">events on</text>' + "".join(rows) + notes + "</svg>\n"
    )


def write_section(path: pathlib.Path, section: str) -> bool:
    """Replace what lies between the markers of ``path``; False when it has none."""
    text = path.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        return False
    path.write_text(head + section + tail)
    return True


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (about 1.5 minutes)")
    parser.add_argument("--no-write", action="store_true", help="print only, touch no docs")
    parser.add_argument("--rounds", type=int, help="cost rounds (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per cost measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop callers")
    parser.add_argument("--burst", type=int, help="events per throughput burst")
    parser.add_argument("--lag-rates", type=float, nargs="+", help="DeleteCast/s of the lag phase")
    parser.add_argument("--lag-seconds", type=float, help="measured seconds per lag rate")
    parser.add_argument("--postgres-url", default=None, help="server URL (default: loopback)")
    parser.add_argument("--work-dir", type=pathlib.Path, help="keep logs here (default: temp)")
    parser.add_argument("--output", type=pathlib.Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--svg", type=pathlib.Path, default=ROOT / "docs" / "events-cost.svg")
    args = parser.parse_args(argv)
    # A SIGTERM (``timeout``, a closing terminal) unwinds like an error: every process and
    # database this run made goes with it.
    signal.signal(signal.SIGTERM, _terminated)
    quick = args.quick
    command = "python -m bench.events" + (" --quick" if quick else "")
    report = Report(_facts(command))
    with contextlib.ExitStack() as stack:
        if args.work_dir is not None:
            work_dir = args.work_dir.resolve()
            work_dir.mkdir(parents=True, exist_ok=True)
        else:
            work_dir = pathlib.Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-events-"))
            )
        options = Options(
            quick=quick,
            rounds=args.rounds or (1 if quick else 3),
            duration=args.duration or (2.0 if quick else 4.0),
            warmup=1.0,
            concurrency=args.concurrency,
            burst=args.burst or (500 if quick else 3000),
            lag_rates=tuple(args.lag_rates or (50.0, 200.0)),
            lag_seconds=args.lag_seconds or (4.0 if quick else 12.0),
            postgres_url=args.postgres_url,
            work_dir=work_dir,
        )
        report.rounds, report.duration = options.rounds, options.duration
        report.concurrency = options.concurrency
        for name, value in report.facts:
            print(f"{name}: {value}")
        try:
            run(options, report)
        except (StartError, RuntimeError, grpc.RpcError) as error:
            print(f"\nbench.events: {error}\n(logs in {work_dir}; --work-dir keeps them)")
            return 1
    end_load = procfs.load_average()
    report.facts.append(
        ("load average at the end", f"{end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}")
    )
    section = markdown(report)
    print("\n" + section)
    if not args.no_write:
        args.svg.write_text(svg(report))
        if write_section(args.output, section):
            print(f"\nwrote {args.output} and {args.svg}")
        else:
            print(f"\nwrote {args.svg}; {args.output} has no {BEGIN} markers: tables not written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
