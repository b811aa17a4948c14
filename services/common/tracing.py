"""OpenTelemetry traces of a service process, exported over OTLP when asked for.

The standard variables, and only those, configure it: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns export on, ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG`` choose the sampling (Cinema's default: parent-based, always on
for a root, so the gateway's decision rules), ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` name the process. Without an endpoint nothing is installed:
the API's no-op tracer costs nothing per call and nothing is exported.

What is traced, once :func:`configure` ran:

* every served call (``opentelemetry-instrumentation-grpc``'s server interceptor, which
  continues the caller's W3C ``traceparent``);
* every peer call (its client interceptor on :class:`services.common.peers.PeerChannel`),
  so a buy is one trace through Envoy, order, user and movie;
* every SQLAlchemy statement (``opentelemetry-instrumentation-sqlalchemy`` on each engine).
  Movie's GetMovie runs its prepared statement on the raw driver cursor, past SQLAlchemy,
  and has no statement span.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import grpc
from sqlalchemy import Engine

logger = logging.getLogger(__name__)

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_enabled = False


def enabled() -> bool:
    """Whether this process exports traces."""
    return _enabled


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK with an OTLP/gRPC exporter when an endpoint is set; whether it did."""
    global _enabled
    env = os.environ if environ is None else environ
    if not any(env.get(variable) for variable in _ENDPOINT_VARIABLES):
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the default.
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service})
    # With OTEL_TRACES_SAMPLER unset the SDK would sample every root; say so explicitly.
    sampler = None if env.get("OTEL_TRACES_SAMPLER") else ParentBased(TraceIdRatioBased(1.0))
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    logger.info("exporting traces over OTLP to %s", _endpoint(env))
    return True


def _endpoint(env: Mapping[str, str]) -> str:
    return next(env[v] for v in _ENDPOINT_VARIABLES if env.get(v))


def shutdown() -> None:
    """Flush the spans not exported yet (at process exit)."""
    if not _enabled:
        return
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    provider.shutdown()


def server_interceptors() -> list[grpc.ServerInterceptor]:  # type: ignore[type-arg]
    """The server interceptor that starts a span per call (none when tracing is off)."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [server_interceptor()]  # type: ignore[no-untyped-call]


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """``channel`` with a client span per call and the context sent as ``traceparent``."""
    if not _enabled:
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor, grpcext

    # The instrumentation's interceptor is its own kind (grpcext), not grpc's.
    traced: grpc.Channel = grpcext.intercept_channel(channel, client_interceptor())  # type: ignore[no-untyped-call]
    return traced


def trace_engine(engine: Engine) -> None:
    """A span per statement run on ``engine``."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().instrument(engine=engine, enable_commenter=False)


def current_ids() -> tuple[str, str] | None:
    """The trace and span id (hex) of the span this thread is in, if any."""
    if not _enabled:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
