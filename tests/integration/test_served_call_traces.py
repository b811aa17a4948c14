"""A ``cinema serve`` process with OTLP on exports the span of each served call, under
Cinema's sampler (its own served-call span, services/common/served_spans.py, and its OTLP
encoder) and under a sampler the SDK builds from ``OTEL_TRACES_SAMPLER`` (the SDK's span):
the same span either way, continuing the caller's traceparent, with the call's status."""

from __future__ import annotations

import pathlib
import time

import grpc
import pytest

from cinema.v1 import movie_pb2, movie_pb2_grpc
from services.trace_store import Span, TraceReceiver, TraceStore
from tests.conftest import DatabaseFactory
from tests.support.processes import start_cinema_serve
from tests.support.tokens import SigningKeys

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _served_spans(store: TraceStore, trace_id: str) -> list[Span]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = [s for s in store.spans(trace_id) if s.kind == "SERVER"]
        if spans:
            return spans
        time.sleep(0.2)
    raise AssertionError(f"no served span of trace {trace_id} arrived")


@pytest.mark.parametrize(
    "sampler", [{}, {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}], ids=["cinema", "sdk"]
)
def test_a_served_call_is_one_span_of_its_callers_trace(
    sampler: dict[str, str],
    receiver: TraceReceiver,
    tmp_path: pathlib.Path,
    keys: SigningKeys,
    databases: DatabaseFactory,
) -> None:
    env = {
        **keys.env(),
        **sampler,
        "DATABASE_URL": databases("movie_traced"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "movie-traced",
    }
    process = start_cinema_serve("movie", env)
    try:
        with (
            grpc.insecure_channel(process.address) as channel,
            pytest.raises(grpc.RpcError) as missing,
        ):
            movie_pb2_grpc.MovieServiceStub(channel).GetMovie(
                movie_pb2.GetMovieRequest(id="no-such-movie"),
                metadata=(("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),),
                timeout=10,
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        (served,) = _served_spans(TraceStore(tmp_path), TRACE_ID)
    finally:
        process.terminate()
    assert (served.name, served.service) == ("/cinema.v1.MovieService/GetMovie", "movie-traced")
    assert served.parent_span_id == CALLER_SPAN and len(served.span_id) == 16
    assert served.is_error and served.status_message.startswith("NOT_FOUND: ")
    assert served.attributes["rpc.method"] == "GetMovie"
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert served.start_ns <= served.end_ns
