"""The span of a recorded served call, made without the SDK's general span machinery.

The SDK's ``Tracer.start_span`` asks the sampler, builds a ``Span`` with a lock, bounded
attributes (a dict, an ordered dict and a lock, every value checked), bounded event and
link lists, and on ``end`` copies it all into a ``ReadableSpan`` for the processors. For
every served call, that was most of what 100 % sampling cost GetMovie in the service's own
threads (``python -m bench.telemetry``, docs/benchmarks.md).

A served call needs less. Cinema's sampler has already decided (the server interceptor's
draw, :func:`services.common.tracing.unsampled_context`), its attributes are the same for
every call of a method, and it is used by the thread that serves the call. So
:class:`ServedCallSpan` keeps the method's attributes as they are until something sets
one, makes event and link lists only when one is added, and hands the processors one
SDK ``ReadableSpan`` when it ends: what the SDK's own span would have handed them, with the
same resource, scope, limits (``OTEL_SPAN_*_LIMIT``) and status rules. Every other span
(SQL statements, peer calls, event handling) is the SDK's.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from time import time_ns
from types import TracebackType

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


class ServedSpans:
    """Makes :class:`ServedCallSpan` s for one tracer provider's resource and processor."""

    def __init__(self, processor: SpanProcessor, resource: Resource, scope: str) -> None:
        self.processor = processor
        self.resource = resource
        self.scope = InstrumentationScope(scope, "")  # as TracerProvider.get_tracer(scope) has it
        self.limits = SpanLimits()  # reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT and the others

    def fixed_attributes(
        self, limit: int | None, attributes: types.Attributes
    ) -> BoundedAttributes:
        """An event's or a link's attributes, as the SDK keeps them: bounded, immutable."""
        return BoundedAttributes(
            limit, attributes, max_value_len=self.limits.max_attribute_length, immutable=True
        )

    def start(
        self, name: str, parent: SpanContext | None, attributes: Mapping[str, types.AnyValue]
    ) -> ServedCallSpan:
        """A started SERVER span: a child of ``parent`` (a caller's sampled span) when there is
        one, else the root of a new trace. ``attributes`` is kept, not copied or checked: it
        must not change, and its values must be valid within the limits (the method's own
        few strings are)."""
        if parent is not None and parent.is_valid:
            trace_id, trace_state = parent.trace_id, parent.trace_state
        else:
            parent, trace_id, trace_state = None, random.getrandbits(128) or 1, None
        context = SpanContext(
            trace_id,
            random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=_SAMPLED,
            trace_state=trace_state,
        )
        return ServedCallSpan(self, name, context, parent, attributes)


class ServedCallSpan(trace.Span):
    """A recording SERVER span with the API's whole interface (see the module's notes)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_events",
        "_links",
        "_name",
        "_parent",
        "_spans",
        "_start_time",
        "_status",
    )  # fmt: skip

    def __init__(
        self,
        spans: ServedSpans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: Mapping[str, types.AnyValue],
    ) -> None:
        self._spans = spans
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes: Mapping[str, types.AnyValue] = attributes
        self._events: BoundedList[Event] | None = None
        self._links: BoundedList[Link] | None = None
        self._status = _UNSET
        self._start_time = time_ns()
        self._end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def _own_attributes(self) -> BoundedAttributes:
        attributes = self._attributes
        if not isinstance(attributes, BoundedAttributes):  # the method's, shared: copy once
            limits = self._spans.limits
            attributes = self._attributes = BoundedAttributes(
                limits.max_span_attributes,
                attributes,
                immutable=False,
                max_value_len=limits.max_span_attribute_length,
            )
        return attributes

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is None:
            self._own_attributes()[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is None:
            own = self._own_attributes()
            for key, value in attributes.items():
                own[key] = value

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None:
            return
        limits = self._spans.limits
        if self._events is None:
            self._events = BoundedList(limits.max_events)
        bounded = self._spans.fixed_attributes(limits.max_event_attributes, attributes)
        self._events.append(Event(name=name, attributes=bounded, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        # The SDK's rule: an invalid context only with attributes or a trace state.
        if self._end_time is not None or not (
            context.is_valid or attributes or context.trace_state
        ):
            return
        limits = self._spans.limits
        if self._links is None:
            self._links = BoundedList(limits.max_links)
        bounded = self._spans.fixed_attributes(limits.max_link_attributes, attributes)
        self._links.append(Link(context=context, attributes=bounded))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET is ignored.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        import traceback

        module = type(exception).__module__
        qualname = type(exception).__qualname__
        kind = f"{module}.{qualname}" if module and module != "builtins" else qualname
        event_attributes: dict[str, types.AnyValue] = {
            "exception.type": kind,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        event_attributes.update(attributes or {})
        self.add_event("exception", event_attributes, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time_ns()
        spans = self._spans
        spans.processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=spans.resource,
                attributes=self._attributes,
                events=self._events or (),
                links=self._links or (),
                kind=SpanKind.SERVER,
                status=self._status,
                start_time=self._start_time,
                end_time=self._end_time,
                instrumentation_scope=spans.scope,
            )
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.end()
