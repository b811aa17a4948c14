"""A served call's span (services/common/served_spans.py) ends as the SDK's own span would.

The same generated operations (attributes, events, links, statuses, renames, exceptions,
some after the end) are applied to a :class:`ServedCallSpan` and to an SDK span of a
TracerProvider with the same resource, limits and random ids; what the processor gets
from each must encode to the same OTLP span, times aside.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from services.common.served_spans import ServedSpans
from tests.support.spans import KeepSpans, keeping_provider

ATTRIBUTES = {
    "rpc.system": "grpc",
    "rpc.service": "cinema.v1.MovieService",
    "rpc.method": "GetMovie",
}


def _pair() -> tuple[Any, ServedSpans, KeepSpans, KeepSpans]:
    resource = Resource.create({"service.name": "movie"})
    sdk_spans, ours = KeepSpans(), KeepSpans()
    provider = keeping_provider(resource, sdk_spans)
    served = ServedSpans(SimpleSpanProcessor(ours), resource, "cinema.server")
    return provider.get_tracer("cinema.server"), served, sdk_spans, ours


def _timeless(span: ReadableSpan) -> bytes:
    encoded = _encode_span(span)
    encoded.start_time_unix_nano = encoded.end_time_unix_nano = 0
    for event in encoded.events:  # an event without a timestamp is stamped when added
        event.time_unix_nano = 0
    return encoded.SerializeToString()


text = st.text(max_size=8)
values = st.one_of(
    text, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False)
)
attributes = st.dictionaries(text, values, max_size=3)
contexts = st.builds(
    lambda trace_id, span_id, valid: SpanContext(trace_id if valid else 0, span_id, is_remote=True),
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.booleans(),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set_attribute"), text, values),
        st.tuples(st.just("set_attributes"), attributes),
        st.tuples(
            st.just("add_event"), text, attributes, st.one_of(st.none(), st.integers(1, 2**62))
        ),
        st.tuples(st.just("add_link"), contexts, st.one_of(st.none(), attributes)),
        st.tuples(
            st.just("set_status"),
            st.one_of(
                st.sampled_from(list(StatusCode)),
                st.builds(Status, st.sampled_from(list(StatusCode)), st.one_of(st.none(), text)),
            ),
            st.one_of(st.none(), text),
        ),
        st.tuples(st.just("update_name"), text),
        st.tuples(st.just("record_exception"), st.sampled_from([ValueError("bad"), KeyError("k")])),
        st.just(("end",)),
    ),
    max_size=12,
)
parents = st.one_of(
    st.none(),
    st.builds(
        lambda trace_id, span_id: SpanContext(
            trace_id,
            span_id,
            is_remote=True,
            trace_flags=TraceFlags(1),
            trace_state=TraceState([("k", "v")]),
        ),
        st.integers(1, 2**128 - 1),
        st.integers(1, 2**64 - 1),
    ),
)


def _apply(span: Any, steps: list[tuple[Any, ...]]) -> None:
    for name, *arguments in steps:
        getattr(span, name)(*arguments)
    span.end()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parents, operations, st.integers(0, 2**32))
def test_a_served_call_span_ends_as_the_sdks_span_would(
    parent: SpanContext | None, steps: list[tuple[Any, ...]], seed: int
) -> None:
    tracer, served, sdk_spans, ours = _pair()
    random.seed(seed)  # the same ids: both draw the trace id, then the span id
    context = None if parent is None else set_span_in_context(NonRecordingSpan(parent))
    _apply(
        tracer.start_span("/cinema.v1.MovieService/GetMovie", context, SpanKind.SERVER, ATTRIBUTES),
        steps,
    )
    random.seed(seed)
    _apply(served.start("/cinema.v1.MovieService/GetMovie", parent, ATTRIBUTES), steps)
    assert len(ours.spans) == len(sdk_spans.spans) == 1
    mine, theirs = ours.spans[0], sdk_spans.spans[0]
    assert _timeless(mine) == _timeless(theirs)
    assert (mine.resource, mine.instrumentation_scope) == (
        theirs.resource,
        theirs.instrumentation_scope,
    )
    assert mine.start_time is not None and mine.end_time is not None
    assert mine.start_time <= mine.end_time


def test_the_methods_attributes_are_shared_until_a_span_sets_one() -> None:
    """The attributes handed to ``start`` are never changed: a span that sets one gets its
    own copy, and the next span of the method starts from the original."""
    _, served, _, ours = _pair()
    base = dict(ATTRIBUTES)
    first = served.start("m", None, base)
    first.set_attribute("rpc.grpc.status_code", 5)
    first.end()
    served.start("m", None, base).end()
    assert base == ATTRIBUTES
    assert ours.spans[0].attributes == {**ATTRIBUTES, "rpc.grpc.status_code": 5}
    assert ours.spans[1].attributes == ATTRIBUTES


def test_limits_come_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    _, served, _, ours = _pair()
    span = served.start("m", None, ATTRIBUTES)
    span.set_attributes({"a": 1, "b": 2})
    span.add_event("one")
    span.add_event("two")
    span.end()
    (ended,) = ours.spans
    assert ended.attributes is not None
    assert len(ended.attributes) == 4 and ended.dropped_attributes == 1
    assert [event.name for event in ended.events] == ["two"] and ended.dropped_events == 1


def test_a_child_span_and_the_log_ids_follow_the_served_span() -> None:
    """An SDK span started inside it is its child, in its trace."""
    tracer, served, sdk_spans, ours = _pair()
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    span = served.start("m", parent, ATTRIBUTES)
    child = tracer.start_span("SELECT movie", set_span_in_context(span), SpanKind.CLIENT)
    child.end()
    span.end()
    (sql,), (server,) = sdk_spans.spans, ours.spans
    assert server.parent == parent and server.context.trace_id == 0xABC
    assert sql.parent is not None and sql.parent.span_id == server.context.span_id
    assert sql.context.trace_id == 0xABC
    assert span.is_recording() is False
    assert Link(span.get_span_context()).context.is_valid
