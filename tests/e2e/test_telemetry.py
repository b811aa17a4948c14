"""Telemetry as an operator uses it, on `cinema up --traces`: one buy is one trace from Envoy
through order, user and movie down to their SQL statements; a failed call's span says so;
a log line of a call carries its trace id; /metrics is in the Prometheus target list."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest

from services.trace_store import Span, TraceStore
from tests.e2e.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    RunningSystem,
    start_system,
    stop_system,
)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    system = start_system(
        tmp_path_factory.mktemp("traced"),
        replicas=1,
        # The SDK's standard variable: export each batch after 0.2 s, not 5 s.
        extra_env={"OTEL_BSP_SCHEDULE_DELAY": "200"},
        extra_args=("--traces",),
    )
    try:
        yield system
    finally:
        assert stop_system(system) == []


def _trace_of(store: TraceStore, request_id: str, services: set[str]) -> list[Span]:
    """The spans of the trace whose Envoy span carries ``request_id``, once ``services``
    have all reported (exports arrive in batches)."""
    deadline = time.monotonic() + 15
    while True:
        for summary in store.traces(limit=50):
            spans = store.spans(summary.trace_id)
            ours = any(s.attributes.get("guid:x-request-id") == request_id for s in spans)
            complete = services <= {s.service for s in spans} or time.monotonic() > deadline
            if ours and complete:
                return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"no trace with request id {request_id}")
        time.sleep(0.3)


def test_one_buy_is_one_trace_from_envoy_to_every_database(traced: RunningSystem) -> None:
    system = traced
    admin = system.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    movie = system.request(
        "POST", "/api/v1/movies",
        {"title": "Traced", "price": {"currencyCode": "EUR", "amountMinor": 300}}, token=admin,
    ).body  # fmt: skip
    bought = system.request(
        "POST", "/api/v1/orders?requestId=trace-1",
        {"items": [{"movieId": movie["id"], "quantity": 1}]}, token=admin,
    )  # fmt: skip
    assert bought.status == 200, bought
    spans = _trace_of(
        TraceStore(system.data_dir), bought.headers["x-request-id"], {"order", "user", "movie"}
    )
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if not s.parent_span_id]
    assert root.service == "envoy"
    assert all(s.parent_span_id in by_id for s in spans if s is not root), "one connected tree"
    assert {"envoy", "order", "user", "movie"} <= {s.service for s in spans}
    served = {s.name for s in spans if s.kind == "SERVER"}
    assert {
        "/cinema.v1.OrderService/CreateOrder",
        "/cinema.v1.UserService/GetUser",
        "/cinema.v1.MovieService/BatchGetMovies",
    } <= served
    statements = {s.service for s in spans if "db.statement" in s.attributes}
    assert {"order", "user", "movie"} <= statements, "a SQL span in every database touched"
    # Each peer call is a child of the call that made it, through Envoy.
    get_user = next(s for s in spans if s.name == "/cinema.v1.UserService/GetUser" and
                    s.kind == "SERVER")  # fmt: skip
    chain = []
    span = get_user
    while span.parent_span_id:
        span = by_id[span.parent_span_id]
        chain.append(span.service)
    assert "order" in chain and chain[-1] == "envoy"


def test_a_trace_continues_through_the_outbox_into_the_event_handler(
    traced: RunningSystem,
) -> None:
    system = traced
    admin = system.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    cast = system.request("POST", "/api/v1/casts", {"name": "Traced Actor"}, token=admin).body
    system.request(
        "POST", "/api/v1/movies",
        {"title": "Traced cast", "castIds": [cast["id"]],
         "price": {"currencyCode": "EUR", "amountMinor": 300}}, token=admin,
    )  # fmt: skip
    deleted = system.request("DELETE", f"/api/v1/casts/{cast['id']}", token=admin)
    assert deleted.status == 200
    spans = _trace_of(TraceStore(system.data_dir), deleted.headers["x-request-id"], {"movie"})
    by_id = {s.span_id: s for s in spans}
    (handled,) = [s for s in spans if s.name == "movie handle cinema.v1.CastDeleted"]
    assert handled.kind == "CONSUMER" and handled.status != "ERROR"
    assert by_id[handled.parent_span_id].name == "/cinema.v1.CastService/DeleteCast"
    assert any(
        s.parent_span_id == handled.span_id and "db.statement" in s.attributes for s in spans
    ), "the handler's SQL is in the same trace"


def test_a_failed_call_is_an_error_span_and_its_log_line_has_the_trace_id(
    traced: RunningSystem,
) -> None:
    system = traced
    missing = system.request("GET", "/api/v1/movies/no-such-movie")
    assert missing.status == 404
    spans = _trace_of(TraceStore(system.data_dir), missing.headers["x-request-id"], {"movie"})
    (served,) = [s for s in spans if s.service == "movie" and s.kind == "SERVER"]
    assert served.status == "ERROR"
    # The servicer context holds the details as bytes; the span says them as text.
    assert served.status_message == "NOT_FOUND: movie 'no-such-movie' not found"
    log = (system.data_dir / "logs" / "movie-1.log").read_text().splitlines()
    records = [json.loads(line) for line in log if line.startswith("{")]
    assert any(
        r.get("trace_id") == served.trace_id and "NOT_FOUND" in r["message"] for r in records
    ), "the log line of the failed call names its trace"


def test_every_process_is_in_the_prometheus_target_list(traced: RunningSystem) -> None:
    targets = json.loads((traced.data_dir / "prometheus" / "targets.json").read_text())
    services = {t["labels"].get("service") for t in targets if t["labels"]["job"] == "cinema"}
    assert services == {"movie", "cast", "user", "order"}
    for target in targets:
        path = target["labels"].get("__metrics_path__", "/metrics")
        url = f"http://{target['targets'][0]}{path}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        expected = "envoy_" if target["labels"]["job"] == "envoy" else "cinema_rpc_server"
        assert expected in text, url


def test_health_checks_leave_no_trace(traced: RunningSystem) -> None:
    """Polls of /healthz (load balancers', probes', ``cinema up`` waiting at start) are not
    traced by Envoy, so they neither crowd the store nor become ``cinema trace``'s latest
    failed call; a call after them still is."""
    system = traced
    polls = [system.request("GET", "/healthz") for _ in range(3)]
    assert [poll.status for poll in polls] == [200, 200, 200]
    poll_ids = {poll.headers["x-request-id"] for poll in polls}
    after = system.request("GET", "/api/v1/movies")
    assert after.status == 200
    store = TraceStore(system.data_dir)
    _trace_of(store, after.headers["x-request-id"], {"envoy", "movie"})
    traced_ids = {
        span.attributes.get("guid:x-request-id")
        for summary in store.traces(limit=500)
        for span in store.spans(summary.trace_id)
    }
    assert not poll_ids & traced_ids, "a /healthz poll was traced"
