"""OpenTelemetry traces of a service process, exported over OTLP when asked for.

The standard variables, and only those, configure it: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns export on, ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG`` choose the sampling (Cinema's default: parent-based, always on
for a root, so the gateway's decision rules), ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` name the process. Without an endpoint nothing is installed:
the API's no-op tracer costs nothing per call and nothing is exported.

What is traced, once :func:`configure` ran:

* every served call (:class:`services.common.interceptors.TracingInterceptor`, which
  continues the caller's W3C ``traceparent``; leaner than the instrumentation's own);
* every peer call (its client interceptor on :class:`services.common.peers.PeerChannel`),
  so a buy is one trace through Envoy, order, user and movie;
* every SQLAlchemy statement (``opentelemetry-instrumentation-sqlalchemy`` on every engine
  made after :func:`configure`).
  Movie's GetMovie runs its prepared statement on the raw driver cursor, past SQLAlchemy,
  and has no statement span.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import grpc

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

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the default.
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource, sampler=_sampler(env))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # Every engine made from now on gets a span per statement. It wraps
    # sqlalchemy.create_engine, which services.common.db looks up at each call for this.
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # Its declared range ends below SQLAlchemy 2.1, which it works with (the events it uses
    # are unchanged); the e2e trace test checks the statement spans arrive.
    SQLAlchemyInstrumentor().instrument(enable_commenter=False, skip_dep_check=True)
    _enabled = True
    logger.info("exporting traces over OTLP to %s", _endpoint(env))
    return True


def _sampler(env: Mapping[str, str]) -> Any:
    """Parent-based ratio sampling (``OTEL_TRACES_SAMPLER_ARG``, 1.0 by default) whose
    roots are served calls only.

    A span with a sampled parent (the gateway's, or a caller's traceparent) is kept, the
    others follow the ratio if they serve a call, and everything else that would start a
    trace of its own is dropped: the database health ping each second, migrations at
    start. Another ``OTEL_TRACES_SAMPLER`` is the SDK's to build, as the variable says.
    """
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
        TraceIdRatioBased,
    )
    from opentelemetry.trace import SpanKind

    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    if name != "parentbased_traceidratio":
        return None  # the SDK reads the variables itself
    ratio = TraceIdRatioBased(float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0))

    class ServedCallRoots(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str,
                          kind: Any = None, attributes: Any = None, links: Any = None,
                          trace_state: Any = None) -> SamplingResult:  # fmt: skip
            if kind is not SpanKind.SERVER:
                return SamplingResult(Decision.DROP)
            return ratio.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"ServedCallRoots{{{ratio.get_description()}}}"

    return ParentBased(root=ServedCallRoots())


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
    from services.common.interceptors import TracingInterceptor

    return [TracingInterceptor()]


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """``channel`` with a client span per call and the context sent as ``traceparent``."""
    if not _enabled:
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor, grpcext

    # The instrumentation's interceptor is its own kind (grpcext), not grpc's.
    traced: grpc.Channel = grpcext.intercept_channel(channel, client_interceptor())  # type: ignore[no-untyped-call]
    return traced


def record_status(code: grpc.StatusCode, message: str = "") -> None:
    """Mark the current (server) span with the call's final code: ERROR for any failed call.

    Called by :class:`services.common.interceptors.TracingInterceptor` once the call is
    done, with the code the servicer context holds (``abort_with_status`` included). Any
    non-OK code is an error (the operator's question is "which calls failed"), also where
    the semantic conventions leave client errors unset.
    """
    if not _enabled or code is grpc.StatusCode.OK:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    span.set_status(Status(StatusCode.ERROR, f"{code.name}: {message}"[:256]))


def current_ids() -> tuple[str, str] | None:
    """The trace and span id (hex) of the span this thread is in, if any."""
    if not _enabled:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the span this thread is in, when it is being recorded
    (what an outbox row carries to the consumer of its event)."""
    if not _enabled:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


@contextlib.contextmanager
def consumer_span(
    name: str, traceparent: str | None, attributes: Mapping[str, str]
) -> Iterator[None]:
    """A CONSUMER span around an event's handling, continuing the trace of the change that
    made the event (``traceparent`` from its outbox row). An event without one starts no
    trace: the sampler keeps only served calls as roots."""
    if not _enabled:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent or ""})
    tracer = trace.get_tracer("cinema.events")
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=dict(attributes),
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        try:
            yield
        except Exception as error:
            span.set_status(Status(StatusCode.ERROR, f"{error.__class__.__name__}"))
            raise
