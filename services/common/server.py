"""Server bootstrap shared by every service: interceptors, health, reflection, graceful
shutdown.

The serving model is grpcio's synchronous server: a pool of worker threads, each running
one call from request to response (interceptors, servicer, use case, database, peers) with
no event loop and no hand-off between threads. The A/B in ``bench/serving.py`` measured it
against grpc.aio with ``asyncio.to_thread``, grpc.aio on uvloop, grpc.aio with an asyncpg
repository and grpcio 1.83.2 (before the asyncio accept-loop regression): the synchronous
server served GetMovie fastest, and it keeps one synchronous repository for both
PostgreSQL and SQLite (docs/benchmarks.md has the figures).

Events (:mod:`services.common.events`) run beside the calls on a thread of their own. The
broker being away does not change health (writes keep working, their events wait in the
outbox), except at start: SERVING waits until the ended sessions are read
(:meth:`~services.common.events.bus.EventBus.ready`, at most 10 s).

Health answers for ``""`` and the service's own name. It turns SERVING only once the
database answers, follows the database afterwards, and goes NOT_SERVING when shutdown
begins; then in-flight calls get ``grace_seconds`` to finish before the process exits.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import tracing
from services.common.auth import TokenVerifier
from services.common.events.bus import EventBus
from services.common.interceptors import AuthorizationInterceptor, ErrorMappingInterceptor
from services.common.metrics import MetricsInterceptor, serve_metrics
from services.common.settings import Settings

logger = logging.getLogger(__name__)

#: Largest request metadata a service accepts: above Envoy's 60 KiB header limit.
MAX_METADATA_BYTES = 96 * 1024

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The first wait between health checks while a service has not served yet.
_FIRST_CHECK_DELAY = 0.025


class BackgroundWorker(Protocol):
    """A thread of a service's own beside its calls (the user service's mail relay)."""

    def start(self) -> None: ...
    def stop(self) -> None:
        """Finish what it is doing and stop, within a bounded time."""
        ...


@dataclass
class ServiceSpec:
    """What the bootstrap needs from one service's composition root."""

    full_name: str  # e.g. "cinema.v1.MovieService"
    register: Callable[[grpc.Server], None]
    database_ping: Callable[[], bool]
    close: Callable[[], None] = field(default=lambda: None)
    #: The relay and consumer of its events (None when events are off).
    events: EventBus | None = None
    #: ``handled(method, call_id)``: whether the service carried out that call
    #: (services.common.handled_calls.handled_by), so a repeat of a call that ended the
    #: caller's session may still be answered.
    handled_call: Callable[[str, str], bool] | None = None
    #: Started after the server, stopped after its last call (what that call queued
    #: gets its chance before the process exits).
    background: Sequence[BackgroundWorker] = ()


class CinemaServer:
    """A started synchronous gRPC server for one service, with its health servicer.

    ``worker_threads`` bounds the calls served at once; more wait in grpcio's queue.
    Health ``Watch`` streams do not hold a worker (grpcio-health-checking's non-blocking
    mode), so watchers cannot starve the service's own calls.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        verifier: TokenVerifier,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        grace_seconds: float = 10.0,
        health_interval: float = 2.0,
        worker_threads: int = 4,
        reuse_port: bool = False,
        metrics_address: str = "",
    ) -> None:
        self.spec = spec
        self.grace_seconds = grace_seconds
        self.health_interval = health_interval
        self.metrics_address = metrics_address
        self.metrics_port: int | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=worker_threads, thread_name_prefix="rpc"
        )
        self._health_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="health"
        )
        self.health = health.HealthServicer(
            experimental_non_blocking=True, experimental_thread_pool=self._health_pool
        )
        self.server = grpc.server(
            self.executor,
            interceptors=[
                # Outermost: the span covers the call as the client sees it.
                *tracing.server_interceptors(),
                # Counted only where someone can read the counts (CINEMA_METRICS_ADDR=off:
                # no /metrics, and no work per call for it either).
                *([MetricsInterceptor()] if metrics_address else []),
                ErrorMappingInterceptor(),
                AuthorizationInterceptor(
                    verifier,
                    spec.events.revocations if spec.events is not None else None,
                    spec.handled_call,
                ),
            ],
            # grpcio turns SO_REUSEPORT on by default; a second process would then share the
            # port silently. Only opt in where several processes share a port on purpose.
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                # A JSON GET reaches a service with its whole URL as metadata
                # (x-envoy-original-path); at gRPC's default 8 KiB a BatchGet of a few
                # hundred ids was refused. Envoy caps a request's headers at 60 KiB, so
                # everything it forwards fits.
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
        )
        spec.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [spec.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind {host}:{port}")
        self._stopping = threading.Event()
        self._watch = threading.Thread(
            target=self._watch_database, name="database-health", daemon=True
        )

    def start(self) -> None:
        """Accept calls (health says NOT_SERVING until the database answers)."""
        self._set_health(NOT_SERVING)
        self.server.start()
        # Logged before the database watch starts, so "listening" always comes before
        # "SERVING" (launchers and tests read the port from the first, readiness from the
        # second).
        self.metrics_port = serve_metrics(self.metrics_address)
        if self.metrics_port is None:
            logger.info("%s listening on port %d", self.spec.full_name, self.port)
        else:
            logger.info(
                "%s listening on port %d, metrics on port %d",
                self.spec.full_name,
                self.port,
                self.metrics_port,
            )
        self._watch.start()
        if self.spec.events is not None:
            self.spec.events.start()
        for worker in self.spec.background:
            worker.start()

    def _set_health(self, status: int) -> None:
        for name in ("", self.spec.full_name):
            self.health.set(name, status)

    def _watch_database(self) -> None:
        serving: bool | None = None
        # Until the first SERVING the checks come quickly (from 50 ms, doubling up to the
        # interval): the events runtime is usually ready a moment after the database
        # answers, and a service waiting a whole interval for its next look came up to
        # 2 s late. Once it has served, one check per interval.
        delay = _FIRST_CHECK_DELAY
        while not self._stopping.is_set():
            # Not before the ended sessions are known (or the broker proved away).
            ok = self.spec.database_ping() and (
                self.spec.events is None or self.spec.events.ready()
            )
            if ok != serving and not self._stopping.is_set():
                serving = ok
                self._set_health(SERVING if ok else NOT_SERVING)
                logger.info("%s is %s", self.spec.full_name, "SERVING" if ok else "NOT_SERVING")
            delay = self.health_interval if ok else min(delay * 2, self.health_interval)
            self._stopping.wait(delay)

    def stop(self) -> None:
        """Graceful stop: NOT_SERVING, no new calls, in-flight calls finish within grace."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        logger.info("stopping: in-flight calls have %.1fs to finish", self.grace_seconds)
        self.server.stop(self.grace_seconds).wait()
        self.executor.shutdown(wait=True, cancel_futures=False)
        for worker in self.spec.background:
            worker.stop()
        if self.spec.events is not None:
            # After the last call: what it stored is published before the process exits
            # (or waits in the outbox for the next start, if the broker is away).
            self.spec.events.stop()
        self._health_pool.shutdown(wait=False, cancel_futures=True)
        if self._watch.is_alive():
            self._watch.join(timeout=self.health_interval + 1)
        self.spec.close()
        logger.info("%s stopped", self.spec.full_name)

    def run_until_signal(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = threading.Event()

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, request_stop)
        self.start()
        stop.wait()
        self.stop()


# libpq's "connection to server at "HOST" (ADDRESS), port PORT failed: REASON".
_LIBPQ_FAILURE = re.compile(
    r'connection to server (?:at "(?P<host>[^"]+)"(?: \([^)]*\))?, port (?P<port>\d+)'
    r'|on socket "(?P<socket>[^"]+)") failed: (?P<reason>.*)',
    re.DOTALL,
)


def describe_database_error(error: BaseException) -> str:
    """A database error in one line that names the cause, e.g. ``PostgreSQL at
    127.0.0.1:5432: database "movie" does not exist`` or ``PostgreSQL at 127.0.0.1:5433:
    Connection refused``, without the driver's traceback or SQLAlchemy's links."""
    from sqlalchemy import exc

    text = str(error.orig) if isinstance(error, exc.DBAPIError) else str(error)
    text = text.removeprefix("connection failed: ")  # psycopg 3 wraps libpq's text
    found = _LIBPQ_FAILURE.search(text)
    if found:
        reason = found.group("reason").strip().splitlines()[0] if found.group("reason") else ""
        reason = reason.removeprefix("FATAL:").strip()
        where = found.group("socket") or f"{found.group('host')}:{found.group('port')}"
        return " ".join(f"PostgreSQL at {where}: {reason}".split())
    lines = [line for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else error.__class__.__name__
    return " ".join(first.split())


def token_verifier(settings: Settings) -> TokenVerifier:
    """The verifier of access tokens: every live key of the ring, or the one public key."""
    if settings.jwt_keys_dir is not None:
        from services.common.keyring import KeyRing

        return TokenVerifier.from_ring(
            KeyRing(settings.jwt_keys_dir),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    assert settings.jwt_public_key_pem is not None
    return TokenVerifier(
        settings.jwt_public_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )


def serve(service: str, *, host: str, port: int) -> None:
    """Run one service process until SIGTERM/SIGINT: what ``cinema serve`` does.

    Settings come from the environment; the service's composition root
    (``services.<service>.__main__.build``) wires its parts and applies its migrations.

    A failure at start is one ERROR line that names the cause (``configuration error:
    ...``, ``database error: ...``, ``cannot listen on ...``; the traceback goes to the log
    at DEBUG) and a non-zero exit: 2 for a bad setting, 1 for a database that does not
    answer or a port that cannot be bound. ``cinema up`` shows that line when a replica
    does not start.
    """
    import importlib

    from sqlalchemy import exc

    from services.common import logs
    from services.common.settings import Settings, SettingsError

    settings = Settings.from_env(service)
    logs.configure(service, log_format=settings.log_format, level=settings.log_level)
    tracing.configure(service)  # before build(): its engines and peer channels are traced
    # Worker threads hand the GIL to each other and to grpcio's polling thread several
    # times per call; at CPython's default 5 ms switch interval a thread that is ready can
    # sit out whole intervals, which shows in the tail latency (docs/benchmarks.md).
    sys.setswitchinterval(0.001)
    try:
        root = importlib.import_module(f"services.{service}.__main__")
        spec: ServiceSpec = root.build(settings)
    except SettingsError as error:
        logger.debug("%s cannot start", service, exc_info=True)
        logger.error("configuration error: %s", error)
        raise SystemExit(2) from None
    except (exc.DBAPIError, exc.ArgumentError) as error:
        from sqlalchemy.engine import make_url

        logger.debug("%s cannot start", service, exc_info=True)
        try:
            where = make_url(settings.database_url).render_as_string(hide_password=True)
        except exc.ArgumentError:
            where = "(not a valid URL)"
        logger.error("database error: %s (DATABASE_URL %s)", describe_database_error(error), where)
        raise SystemExit(1) from None
    try:
        verifier = token_verifier(settings)
        server = CinemaServer(
            spec,
            verifier,
            host=host,
            port=port,
            grace_seconds=settings.grace_seconds,
            worker_threads=settings.worker_threads,
            metrics_address=settings.metrics_address,
        )
    except (OSError, RuntimeError) as error:  # grpcio raises RuntimeError for a taken port
        spec.close()
        logger.debug("%s cannot start", service, exc_info=True)
        logger.error("cannot listen on %s:%d: %s", host, port, error)
        raise SystemExit(1) from None
    try:
        server.run_until_signal()
    finally:
        tracing.shutdown()
