"""OpenTelemetry traces of a service process, exported over OTLP when asked for.

The standard variables, and only those, configure it: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns export on, ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG`` choose the sampling (Cinema's default: parent-based, always on
for a root, so the gateway's decision rules), ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` name the process. Without an endpoint nothing is installed:
the API's no-op tracer costs nothing per call and nothing is exported.

What is traced, once :func:`configure` ran:

* every served call (:class:`services.common.interceptors.TracingInterceptor`, which
  continues the caller's W3C ``traceparent``; leaner than the instrumentation's own), its
  span a :class:`services.common.served_spans.ServedCallSpan` under Cinema's sampler;
* every peer call (its client interceptor on :class:`services.common.peers.PeerChannel`),
  so a buy is one trace through Envoy, order, user and movie;
* every SQL statement SQLAlchemy runs, as a CLIENT span under the call's when that one
  is recorded (:func:`trace_statements`, on every engine :func:`services.common.db.make_engine`
  makes). Movie's GetMovie runs its prepared statement on the raw driver cursor, past
  SQLAlchemy, and has no statement span.

Spans go to the SDK's batch processor and out through
:class:`services.common.otlp_spans.OTLPSpanExporter`, the SDK's OTLP/gRPC exporter with
Cinema's encoder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from services.common.served_spans import ServedSpans

logger = logging.getLogger(__name__)

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_enabled = False


def enabled() -> bool:
    """Whether this process exports traces."""
    return _enabled


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the SDK with an OTLP/gRPC exporter when an endpoint is set; whether it did."""
    global _enabled, _served
    env = os.environ if environ is None else environ
    if not any(env.get(variable) for variable in _ENDPOINT_VARIABLES):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from services.common.otlp_spans import OTLPSpanExporter
    from services.common.served_spans import ServedSpans

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the default.
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource, sampler=_sampler(env))
    processor = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _enabled = True
    # Under Cinema's sampler the server interceptor decides, and starts the span itself.
    _served = None if _root_bound is None else ServedSpans(processor, resource, "cinema.server")
    logger.info("exporting traces over OTLP to %s", _endpoint(env))
    return True


def _sampler(env: Mapping[str, str]) -> Any:
    """Parent-based ratio sampling (``OTEL_TRACES_SAMPLER_ARG``, 1.0 by default) whose
    roots are served calls only.

    A span with a sampled parent (the gateway's, or a caller's traceparent) is kept, one
    with an unsampled parent is not, and a served call without a parent follows the ratio.
    The ratio is drawn by the server interceptor before any span exists
    (:func:`unsampled_context`), so a served root that reaches the SDK is one to keep.
    Everything else that would start a trace of its own is dropped: the database health
    ping each second, migrations at start. Another ``OTEL_TRACES_SAMPLER`` is the SDK's to
    build, as the variable says, and then every call goes through the SDK's sampler.
    """
    global _root_bound
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_ON,
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
        TraceIdRatioBased,
    )
    from opentelemetry.trace import SpanKind

    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    if name != "parentbased_traceidratio":
        _root_bound = None
        return None  # the SDK reads the variables itself
    ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    _root_bound = TraceIdRatioBased.get_bound_for_rate(min(max(ratio, 0.0), 1.0))

    class ServedCallRoots(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str,
                          kind: Any = None, attributes: Any = None, links: Any = None,
                          trace_state: Any = None) -> SamplingResult:  # fmt: skip
            if kind is not SpanKind.SERVER:
                return SamplingResult(Decision.DROP)
            return ALWAYS_ON.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"ServedCallRoots{{ratio {ratio}, drawn by the server interceptor}}"

    return ParentBased(root=ServedCallRoots())


# The served-call ratio as a bound on a trace id's low 64 bits (OpenTelemetry's
# TraceIdRatioBased), when Cinema's sampler is in use; None otherwise.
_root_bound: int | None = None
# What makes a recorded served call's span when Cinema's sampler is in use; None otherwise.
_served: ServedSpans | None = None
_LOW_64 = (1 << 64) - 1


def unsampled_context(parent: Any) -> Any:
    """The OpenTelemetry context for a served call that is not recorded, or None when the
    call is to be recorded (the SDK then makes its span).

    ``parent`` is what the propagator extracted from the caller's ``traceparent`` (None
    without one). A call is not recorded when a valid parent says so (its context is then
    the call's: peer calls carry the unsampled trace on, and log lines its trace id), or,
    with no valid parent, when the ratio's draw says so: then the context holds a
    non-recording span of a new trace. That is the whole cost of an unsampled call; the
    SDK's span machinery cost GetMovie about 13 % of its throughput at 1 %
    (``python -m bench.telemetry``, docs/benchmarks.md). None also when another sampler
    than Cinema's is configured: that one decides in the SDK.
    """
    bound = _root_bound
    if bound is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    if parent is not None:
        caller = trace.get_current_span(parent).get_span_context()
        if caller.is_valid:
            return None if caller.trace_flags.sampled else parent
    trace_id = random.getrandbits(128) or 1
    if trace_id & _LOW_64 < bound:
        return None
    span_context = SpanContext(trace_id, random.getrandbits(64) or 1, is_remote=False)
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def served_spans() -> ServedSpans | None:
    """What starts the span of a served call that :func:`unsampled_context` chose to record
    (:mod:`services.common.served_spans`), or None when another sampler than Cinema's is
    configured: then the SDK's tracer starts it and its sampler decides."""
    return _served


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


def record_status(code: grpc.StatusCode, message: str | bytes = "") -> None:
    """Mark the current (server) span with the call's final code: ERROR for any failed call.

    Called by :class:`services.common.interceptors.TracingInterceptor` once the call is
    done, with the code the servicer context holds (``abort_with_status`` included). Any
    non-OK code is an error (the operator's question is "which calls failed"), also where
    the semantic conventions leave client errors unset. ``message`` is the context's
    details, which grpc keeps as bytes once a call is aborted.
    """
    if not _enabled or code is grpc.StatusCode.OK:
        return
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
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


def trace_statements(engine: Engine) -> None:
    """A CLIENT span for each statement ``engine`` runs, child of the current span, when
    that span is being recorded; nothing at all otherwise.

    Ours rather than opentelemetry-instrumentation-sqlalchemy's listeners: those parse the
    engine URL, look up the database name and start a span for every statement, sampled or
    not, and add a span per ``Engine.connect`` and four counter updates per pool checkout
    and checkin. Together that cost GetMovie about 16 % of its throughput at 1 % sampling
    (``python -m bench.telemetry``, docs/benchmarks.md), where an unsampled call here costs
    one look at the current span per statement. The attributes are the ones the
    instrumentation sets (``db.system``, ``db.name``, ``db.statement``, ``net.peer.*``).
    """
    if not _enabled:
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from sqlalchemy import event

    tracer = trace.get_tracer("cinema.sql")
    url = engine.url
    database = (url.database or "").rsplit("/", 1)[-1]
    common: dict[str, str | int] = {"db.system": url.get_backend_name(), "db.name": database}
    if url.host:
        common["net.peer.name"] = url.host
    if url.port:
        common["net.peer.port"] = url.port
    current_span = trace.get_current_span

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
                executemany: bool) -> None:  # fmt: skip
        parent = current_span()
        if not parent.is_recording() or context is None:
            return
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        context._cinema_span = tracer.start_span(  # a child of the current span
            f"{operation} {database}".rstrip(),
            kind=SpanKind.CLIENT,
            attributes={**common, "db.statement": statement[:2048]},
        )

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
               executemany: bool) -> None:  # fmt: skip
        span = getattr(context, "_cinema_span", None)
        if span is not None:
            context._cinema_span = None
            span.end()

    @event.listens_for(engine, "handle_error")
    def _error(exception_context: Any) -> None:
        span = getattr(exception_context.execution_context, "_cinema_span", None)
        if span is not None:
            exception_context.execution_context._cinema_span = None
            error = exception_context.original_exception
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
