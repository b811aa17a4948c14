"""The trace store with real OTLP: spans exported by the OpenTelemetry SDK over gRPC to a
receiver on 127.0.0.1:0, read back, drawn by ``cinema trace``; its size cap; and
``cinema trace-store`` as the process ``cinema up --traces`` starts."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import queue
import signal
import subprocess
import threading

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from services import trace_view
from services.launcher import _SERVICE_PORT
from services.trace_store import (
    MAX_TEXT_CHARS,
    OLD_SPANS_FILE,
    SPANS_FILE,
    TraceReceiver,
    TraceStore,
)
from tests.support.processes import tool


def provider_for(port: int, service: str) -> TracerProvider:
    """An SDK that exports each span as it ends, over OTLP/gRPC, as ``service``."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def export_a_buy(port: int) -> str:
    """One trace as a buy makes it: a server span and two children, one that failed.
    Its trace id."""
    provider = provider_for(port, "order")
    tracer = provider.get_tracer("tests")
    try:
        with tracer.start_as_current_span(
            "cinema.v1.OrderService/CreateOrder", kind=SpanKind.SERVER
        ) as root:
            root.set_attribute("rpc.method", "CreateOrder")
            root.set_attribute("enduser.secret", "not kept")
            with tracer.start_as_current_span("SELECT cinema", kind=SpanKind.CLIENT) as query:
                query.set_attribute(
                    "db.statement", "SELECT * FROM orders WHERE id IN " + "?," * 200
                )
            # The span sees the exception first (the SDK records it), then it is dropped.
            with (
                contextlib.suppress(LookupError),
                tracer.start_as_current_span(
                    "cinema.v1.UserService/GetUser", kind=SpanKind.CLIENT
                ) as call,
            ):
                call.set_attribute("rpc.method", "GetUser")
                raise LookupError("user u-1 not found")
            root.set_status(Status(StatusCode.OK))
        return f"{root.get_span_context().trace_id:032x}"
    finally:
        provider.shutdown()


def test_spans_exported_over_otlp_are_kept_and_drawn(
    receiver: TraceReceiver, tmp_path: pathlib.Path
) -> None:
    assert receiver.port
    trace_id = export_a_buy(receiver.port)
    store = TraceStore(tmp_path)
    spans = store.spans(trace_id)
    assert [(s.name, s.kind, s.service) for s in spans] == [
        ("cinema.v1.OrderService/CreateOrder", "SERVER", "order"),
        ("SELECT cinema", "CLIENT", "order"),
        ("cinema.v1.UserService/GetUser", "CLIENT", "order"),
    ]
    root, query, call = spans
    assert root.parent_span_id == "" and len(root.span_id) == 16
    assert query.parent_span_id == call.parent_span_id == root.span_id
    assert root.start_ns <= query.start_ns <= query.end_ns <= call.start_ns <= root.end_ns
    assert (root.status, root.is_error) == ("OK", False)
    assert call.is_error and call.status_message == "LookupError: user u-1 not found"
    assert call.attributes["exception.type"] == "LookupError"
    assert root.attributes == {"rpc.method": "CreateOrder"}  # only the attributes it keeps
    statement = str(query.attributes["db.statement"])
    assert len(statement) == MAX_TEXT_CHARS and statement.endswith("…")

    [summary] = store.traces()
    assert (summary.trace_id, summary.span_count, summary.error_count) == (trace_id, 3, 1)
    picked = store.latest_interesting()
    assert picked is not None
    assert (picked.summary, picked.reason) == (summary, "the latest trace with an error")
    lines = trace_view.render(spans)
    assert len(lines) == 4
    assert "ERROR  order    " in lines[3]
    assert lines[3].endswith("  cinema.v1.UserService/GetUser  LookupError: user u-1 not found")


def cinema(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("cinema"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_cinema_trace_prints_the_trace(receiver: TraceReceiver, tmp_path: pathlib.Path) -> None:
    data_dir = str(tmp_path)
    assert receiver.port
    trace_id = export_a_buy(receiver.port)
    latest = cinema("trace", "--data-dir", data_dir)
    assert latest.returncode == 0, latest.stderr
    lines = latest.stdout.splitlines()
    assert lines[0] == (
        f"The latest trace with an error: trace {trace_id}: order "
        f"cinema.v1.OrderService/CreateOrder, {lines[0].split(', ')[1]}, 3 spans, 1 failed, "
        "services: order"
    )
    assert lines[1].split() == ["start", "ms", "dur", "ms", *lines[1].split()[4:]]
    assert [line.split("|")[2].strip() for line in lines[2:]] == [
        "order    cinema.v1.OrderService/CreateOrder",
        "order      SELECT cinema  SELECT * FROM orders WHERE id IN ?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
        "?,?,?,?,?,?,?,?,?,…",
        "ERROR  order      cinema.v1.UserService/GetUser  LookupError: user u-1 not found",
    ]
    by_id = cinema("trace", trace_id.upper(), "--data-dir", data_dir)
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout.splitlines()[0].startswith(f"Trace {trace_id}: order ")
    assert by_id.stdout.splitlines()[1:] == lines[1:]

    listed = cinema("trace", "--list", "--data-dir", data_dir)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert f"  {trace_id}  " in line
    assert line.endswith("3 spans  ERROR  order cinema.v1.OrderService/CreateOrder")

    unknown = cinema("trace", "0" * 31 + "1", "--data-dir", data_dir)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr.startswith(f"cinema trace: no trace {'0' * 31}1 in ")
    assert len(unknown.stderr.splitlines()) == 1
    empty = cinema("trace", "--data-dir", str(tmp_path / "nothing-here"))
    assert (empty.returncode, empty.stdout) == (1, "")
    assert empty.stderr.startswith("cinema trace: no traces in ")
    assert len(empty.stderr.splitlines()) == 1


def test_the_files_stay_under_their_cap(tmp_path: pathlib.Path) -> None:
    cap = 2000
    receiver = TraceReceiver(tmp_path, max_file_bytes=cap)
    port = receiver.start()
    try:
        provider = provider_for(port, "movie")
        tracer = provider.get_tracer("tests")
        for n in range(40):
            with tracer.start_as_current_span(f"call-{n:02d}"):
                pass
        provider.shutdown()
    finally:
        receiver.stop(grace=0)
    directory = tmp_path / "traces"
    assert sorted(p.name for p in directory.glob("*.jsonl")) == [OLD_SPANS_FILE, SPANS_FILE]
    sizes = [(directory / name).stat().st_size for name in (OLD_SPANS_FILE, SPANS_FILE)]
    assert all(0 < size <= cap for size in sizes), sizes
    # The oldest went first; what is kept is the newest, complete lines only.
    names = [s.root_name for s in TraceStore(tmp_path).traces()]
    assert 0 < len(names) < 40
    assert names == [f"call-{n:02d}" for n in range(39, 39 - len(names), -1)]
    for name in (OLD_SPANS_FILE, SPANS_FILE):
        for line in (directory / name).read_text().splitlines():
            json.loads(line)


def test_one_receiver_per_directory_and_per_port(
    receiver: TraceReceiver, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(OSError, match="another trace store is writing"):
        TraceReceiver(tmp_path).start()
    assert receiver.port
    with pytest.raises(OSError, match="port is in use"):
        TraceReceiver(tmp_path / "other", port=receiver.port).start()
    # The failed start left the other directory free for a receiver of its own.
    other = TraceReceiver(tmp_path / "other")
    other.start()
    other.stop(grace=0)


def test_trace_store_process_logs_its_port_and_stops_on_sigterm(tmp_path: pathlib.Path) -> None:
    process = subprocess.Popen(
        [tool("cinema"), "trace-store", "--data-dir", str(tmp_path), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # as the launcher reads its children
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        record = json.loads(lines.get(timeout=20))  # JSON: its output is no terminal
        assert record["level"] == "INFO" and record["service"] == "trace-store"
        found = _SERVICE_PORT.search(record["message"])
        assert found, record
        assert str((tmp_path / "traces").resolve()) in record["message"]
        trace_id = export_a_buy(int(found.group(1)))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(TraceStore(tmp_path).spans(trace_id)) == 3
    rest = [json.loads(lines.get(timeout=5))["message"] for _ in range(2)]
    assert rest == ["trace store stopping", "trace store stopped"]


def raw_span(
    name: str,
    span_id: bytes,
    *,
    parent: bytes = b"",
    trace_id: bytes = bytes(range(16)),
    kind: int = trace_pb2.Span.SPAN_KIND_SERVER,
    attributes: dict[str, str] | None = None,
) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]  # any number, as on the wire
        start_time_unix_nano=1_000_000,
        end_time_unix_nano=5_000_000,
        attributes=[
            common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))
            for key, value in (attributes or {}).items()
        ],
    )


def test_raw_otlp_as_envoy_sends_it(receiver: TraceReceiver, tmp_path: pathlib.Path) -> None:
    """Envoy's tracer is no SDK: its failed requests carry an ``error`` tag, and a request
    may hold what no SDK sends (ids of the wrong size, an enum value newer than ours)."""
    envoy = resource_pb2.Resource(
        attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="envoy"))
        ]
    )
    spans = [
        raw_span(
            "ingress", bytes(range(8)), attributes={"error": "true", "http.status_code": "503"}
        ),
        raw_span("egress", bytes(range(1, 9)), parent=bytes(range(8)), kind=42),
        raw_span("bad", b"x", trace_id=b"short"),
    ]
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(resource=envoy, scope_spans=[trace_pb2.ScopeSpans(spans=spans)])
        ]
    )
    with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.Export(request, timeout=10)
    assert not reply.HasField("partial_success")
    store = TraceStore(tmp_path)
    kept = store.spans(bytes(range(16)).hex())
    assert [(s.name, s.kind, s.service, s.is_error) for s in kept] == [
        ("ingress", "SERVER", "envoy", True),
        ("egress", "42", "envoy", False),
    ]
    assert kept[0].attributes == {"error": "true", "http.status_code": "503"}
    assert [s.trace_id for s in store.traces()] == [bytes(range(16)).hex()]
