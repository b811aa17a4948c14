"""Cinema's OTLP span encoder writes exactly the bytes of the SDK's own.

Spans are made through the real SDK (a TracerProvider with a processor that keeps what
ends), with generated names, kinds, attributes of every type the SDK accepts (ints past
int64 and NaN included), events, links, statuses, parents local and remote, trace states,
dropped counts, several resources (some equal, some not) and scopes. The oracle is the
SDK's ``encode_spans(...).SerializeToString()``, compared byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
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

from services.common import otlp_spans
from tests.support.spans import KeepSpans, keeping_provider


def _assert_same(spans: Sequence[ReadableSpan]) -> None:
    try:
        expected = sdk_encode(spans).SerializeToString()
    except Exception as error:  # the SDK's encoder refuses the batch: so must ours
        with pytest.raises(type(error)):
            otlp_spans.encode_spans(spans)
        return
    assert otlp_spans.encode_spans(spans) == expected


text = st.text(max_size=12)
scalars = st.one_of(
    text,
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
values = st.one_of(
    scalars,
    st.lists(text, max_size=3).map(tuple),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(st.floats(), max_size=3).map(tuple),
)
attributes = st.dictionaries(text, values, max_size=5)
span_ids = st.integers(min_value=1, max_value=2**64 - 1)
trace_ids = st.integers(min_value=1, max_value=2**128 - 1)
trace_states = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True),
    ),
    max_size=3,
    unique_by=lambda kv: kv[0],
)

span_plans = st.fixed_dictionaries(
    {
        "provider": st.integers(0, 2),
        "tracer": st.integers(0, 3),
        "name": text,
        "kind": st.sampled_from(list(SpanKind)),
        "attributes": attributes,
        "parent": st.one_of(
            st.none(),
            st.tuples(trace_ids, span_ids, st.booleans(), trace_states),  # remote parent
            st.just("local"),
        ),
        "events": st.lists(st.tuples(text, attributes), max_size=2),
        "links": st.lists(st.tuples(trace_ids, span_ids, attributes), max_size=2),
        "status": st.one_of(
            st.none(),
            st.tuples(st.sampled_from(list(StatusCode)), st.one_of(st.none(), text)),
        ),
        "times": st.one_of(st.none(), st.tuples(st.integers(0, 2**63), st.integers(0, 2**63))),
    }
)


def _tracers(keep: KeepSpans) -> list[list[Any]]:
    """Three providers: two with equal resources (distinct objects), one with its own and
    a limit of two attributes (so some spans drop some); four tracers each, two of them
    equal scopes."""
    resources = [
        Resource.create({"service.name": "movie"}),
        Resource.create({"service.name": "movie"}),
        Resource({"service.name": "order", "replica": 2, "ratio": 0.5}, schema_url="https://x/1"),
    ]
    providers = [
        keeping_provider(resources[0], keep),
        keeping_provider(resources[1], keep),
        keeping_provider(
            resources[2], keep, SpanLimits(max_attributes=2, max_events=1, max_links=1)
        ),
    ]
    return [
        [
            provider.get_tracer("cinema.server"),
            provider.get_tracer("cinema.server"),
            provider.get_tracer("cinema.sql", "1.0", schema_url="https://x/2"),
            provider.get_tracer("lib", attributes={"a": 1, "b": "c"}),
        ]
        for provider in providers
    ]


def _make(plan: dict[str, Any], tracers: list[list[Any]]) -> None:
    tracer = tracers[plan["provider"]][plan["tracer"]]
    parent = plan["parent"]
    context = None
    local = None
    if isinstance(parent, tuple):
        trace_id, span_id, sampled, state = parent
        context = set_span_in_context(
            NonRecordingSpan(
                SpanContext(
                    trace_id,
                    span_id,
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0),
                    trace_state=TraceState(state),
                )
            )
        )
    elif parent == "local":
        local = tracer.start_span("parent")
        context = set_span_in_context(local)
    links = [
        Link(SpanContext(trace_id, span_id, is_remote=True), link_attributes)
        for trace_id, span_id, link_attributes in plan["links"]
    ]
    start, end = plan["times"] or (None, None)
    span = tracer.start_span(
        plan["name"],
        context=context,
        kind=plan["kind"],
        attributes=plan["attributes"],
        links=links,
        start_time=start,
    )
    for name, event_attributes in plan["events"]:
        span.add_event(name, event_attributes)
    if plan["status"] is not None:
        code, description = plan["status"]
        span.set_status(Status(code, description))
    span.end(end_time=end)
    if local is not None:
        local.end()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(span_plans, min_size=1, max_size=8))
def test_generated_spans_encode_exactly_as_the_sdk_does(plans: list[dict[str, Any]]) -> None:
    keep = KeepSpans()
    tracers = _tracers(keep)
    for plan in plans:
        _make(plan, tracers)
    _assert_same(keep.spans)


def test_a_served_call_span_is_written_by_cinema_not_by_the_sdk_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spans Cinema makes (a server span with string attributes, a status, a remote
    parent) take the direct path: the fallback is never called for them."""
    keep = KeepSpans()
    tracer = keeping_provider(Resource.create({"service.name": "movie"}), keep).get_tracer(
        "cinema.server"
    )
    parent = set_span_in_context(
        NonRecordingSpan(SpanContext(7, 9, is_remote=True, trace_flags=TraceFlags(1)))
    )
    attributes = {
        "rpc.system": "grpc",
        "rpc.service": "cinema.v1.MovieService",
        "rpc.method": "GetMovie",
    }
    for code in (StatusCode.UNSET, StatusCode.ERROR):
        with tracer.start_as_current_span(
            "/cinema.v1.MovieService/GetMovie",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            span.set_attribute("rpc.grpc.status_code", 5)
            span.set_status(
                Status(code, "NOT_FOUND: no movie" if code is StatusCode.ERROR else None)
            )
    expected = sdk_encode(keep.spans).SerializeToString()

    def fallback(span: ReadableSpan) -> Any:
        raise AssertionError(f"{span.name} went to the SDK's encoder")

    monkeypatch.setattr(otlp_spans, "_encode_span", fallback)
    assert otlp_spans.encode_spans(keep.spans) == expected
    # and twice more, from the caches
    assert otlp_spans.encode_spans(keep.spans) == expected


def test_values_that_are_equal_in_python_are_not_confused_by_the_caches() -> None:
    """1, 1.0 and True are equal dict keys, so are 0.0 and -0.0: each keeps its own type
    and bits, in any order and any number of times."""
    keep = KeepSpans()
    tracer = keeping_provider(Resource.create({}), keep).get_tracer("t")
    for value in (1, 1.0, True, 0, 0.0, -0.0, False, 1, True, -0.0, 0.0):
        tracer.start_span("s", attributes={"v": value}).end()
        tracer.start_span("s", attributes={"v": value, "w": value}).end()
    for span in keep.spans:
        _assert_same([span])
    _assert_same(keep.spans)


def test_the_exporter_sends_the_request_it_encodes() -> None:
    """The exporter's translation step is the encoder's bytes as a request message."""
    keep = KeepSpans()
    tracer = keeping_provider(Resource.create({"service.name": "movie"}), keep).get_tracer(
        "cinema.server"
    )
    tracer.start_span("GetMovie", kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"}).end()
    exporter = otlp_spans.OTLPSpanExporter(endpoint="http://127.0.0.1:1", insecure=True)
    try:
        request = exporter._translate_data(keep.spans)
    finally:
        exporter.shutdown()
    assert isinstance(request, ExportTraceServiceRequest)
    assert request == sdk_encode(keep.spans)
