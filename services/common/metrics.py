"""Prometheus metrics of a service process, served on its own ``/metrics`` port.

* ``cinema_rpc_server_duration_seconds{service, method, code}``: a histogram of every call
  (RED in one metric: ``_count`` by code is the rate and the errors, the buckets the
  duration), recorded by :class:`MetricsInterceptor` outside error mapping and
  authorization, so calls refused by either are counted with their code too.
* ``cinema_db_pool_connections{pool, state}``: connections of each SQLAlchemy pool that are
  ``checked_out`` (in use) or ``idle``, beside ``cinema_db_pool_size{pool}``, and
  ``cinema_db_pool_wait_seconds{pool}``, how long units of work waited for a connection.
* Events (:mod:`services.common.events`): ``cinema_outbox_unsent_events`` and
  ``cinema_outbox_lag_seconds`` (the age of the oldest unsent event), read by the relay at
  each poll; ``cinema_events_published_total{event}``;
  ``cinema_events_handled_total{consumer, event, outcome}`` (``applied``, ``duplicate``,
  ``retried``, ``dead_lettered``); ``cinema_event_lag_seconds{consumer, event}``, a histogram
  of the time from the change's commit to its effect's; ``cinema_consumer_pending_events
  {consumer}`` (JetStream's count of events not yet delivered or not yet acked); and
  ``cinema_events_broker_connected`` (1 or 0).
* ``process_*`` (CPU seconds, resident memory, open files) and ``python_gc_*`` from
  prometheus-client's default collectors.

grpcio's own observability package is not used: it reports methods of the asyncio
server as "other" and needs its C++ exporter; one interceptor is a few microseconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool

from services.common.interceptors import Behavior, _WrappingInterceptor

logger = logging.getLogger(__name__)

#: Seconds; Cinema's calls take 1-50 ms, a slow one seconds, the longest allowed 15 s.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)

RPC_DURATION = prometheus_client.Histogram(
    "cinema_rpc_server_duration_seconds",
    "Time to answer one gRPC call, by service, method and status code.",
    ["service", "method", "code"],
    buckets=_BUCKETS,
)


POOL_WAIT = prometheus_client.Histogram(
    "cinema_db_pool_wait_seconds",
    "Time a unit of work waited for a connection from its pool (a new one included).",
    ["pool"],
    buckets=_BUCKETS,
)


OUTBOX_UNSENT = prometheus_client.Gauge(
    "cinema_outbox_unsent_events", "Events in this service's outbox that are not published yet."
)
OUTBOX_LAG = prometheus_client.Gauge(
    "cinema_outbox_lag_seconds",
    "Age of the oldest event in this service's outbox that is not published yet (0: none).",
)
EVENTS_PUBLISHED = prometheus_client.Counter(
    "cinema_events_published",
    "Events this process published to JetStream (acked by the stream).",
    ["event"],
)
EVENTS_HANDLED = prometheus_client.Counter(
    "cinema_events_handled",
    "Events this process's consumer handled, by outcome: applied, duplicate (applied before),"
    " retried (failed, delivered again later), dead_lettered.",
    ["consumer", "event", "outcome"],
)
EVENT_LAG = prometheus_client.Histogram(
    "cinema_event_lag_seconds",
    "Time from the commit of a change to the commit of its effect in a consumer.",
    ["consumer", "event"],
    # Fine at the low end: an event usually takes 5-20 ms from commit to effect here.
    buckets=(
        0.0025,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.075,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        15.0,
        60.0,
        300.0,
    ),
)
CONSUMER_PENDING = prometheus_client.Gauge(
    "cinema_consumer_pending_events",
    "Events the consumer has not acked yet: not delivered, or delivered and in handling.",
    ["consumer"],
)
BROKER_CONNECTED = prometheus_client.Gauge(
    "cinema_events_broker_connected", "1 while this process is connected to NATS, else 0."
)


class MetricsInterceptor(_WrappingInterceptor):
    """Times every unary call and counts it under its final status code."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        service, _, name = method.lstrip("/").rpartition("/")
        children: dict[grpc.StatusCode, Any] = {}

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                return behavior(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
                child = children.get(code)
                if child is None:
                    child = RPC_DURATION.labels(service, name, code.name)
                    children[code] = child
                child.observe(time.perf_counter() - started)

        return timed


class _PoolCollector(Collector):
    def __init__(self) -> None:
        self._pools: dict[str, QueuePool] = {}

    def watch(self, name: str, engine: Engine) -> None:
        if isinstance(engine.pool, QueuePool):  # SQLite files in tests may use others
            self._pools[name] = engine.pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "cinema_db_pool_connections",
            "Connections of a database pool, checked out (in use) or idle in the pool.",
            labels=["pool", "state"],
        )
        size = GaugeMetricFamily(
            "cinema_db_pool_size", "Connections a database pool keeps open.", labels=["pool"]
        )
        for name, pool in self._pools.items():
            connections.add_metric([name, "checked_out"], pool.checkedout())
            connections.add_metric([name, "idle"], pool.checkedin())
            size.add_metric([name], pool.size())
        yield connections
        yield size


_POOLS = _PoolCollector()
prometheus_client.REGISTRY.register(_POOLS)


def watch_pool(name: str, engine: Engine) -> None:
    """Report ``engine``'s pool as ``pool=name`` in ``cinema_db_pool_*``."""
    _POOLS.watch(name, engine)


def serve_metrics(address: str) -> int | None:
    """Serve ``/metrics`` on ``address`` (``host:port``; port 0 picks one); the bound port.

    ``None`` when ``address`` is empty (metrics off).
    """
    if not address:
        return None
    host, _, port = address.rpartition(":")
    server, _thread = prometheus_client.start_http_server(int(port), addr=host or "127.0.0.1")
    bound = int(server.server_port)
    logger.debug("metrics on http://%s:%d/metrics", host, bound)
    return bound
