"""A local trace store: an OTLP/gRPC receiver that keeps spans on disk, and their reader.

No trace backend installs on these machines, so ``cinema up --traces`` runs this receiver
on loopback; Envoy's ``envoy.tracers.opentelemetry`` and the services' OTLP exporters send
it their spans, and ``cinema trace`` (:mod:`services.trace_view`) reads them back.

On disk, in ``DATA_DIR/traces/``:

* ``spans.jsonl``: one span per line, flattened, in the order received::

    {"trace_id": "<32 hex>", "span_id": "<16 hex>", "parent_span_id": "<16 hex or empty>",
     "name": "cinema.v1.OrderService/CreateOrder", "kind": "SERVER", "service": "order",
     "start_ns": 1767000000000000000, "end_ns": 1767000000004200000, "status": "ERROR",
     "status_message": "...", "attributes": {"rpc.method": "CreateOrder", ...}}

  ``kind`` and ``status`` are the OTLP enum names without their prefix (``SERVER``,
  ``CLIENT``, ``INTERNAL``...; ``UNSET``, ``OK``, ``ERROR``), times are Unix nanoseconds,
  ``service`` is the resource's ``service.name``. Only the attributes in
  :data:`KEPT_ATTRIBUTES` are kept, every text cut to :data:`MAX_TEXT_CHARS` characters:
  this is a tool to see where a call spent its time and where it failed, not an archive.
* ``spans.1.jsonl``: the previous file. Before a write would take ``spans.jsonl`` past
  ``max_file_bytes`` (20 MiB by default) it becomes ``spans.1.jsonl``, replacing the one
  before, and a new ``spans.jsonl`` starts. So the store never takes more than twice the cap
  on disk, and the oldest spans go first.
* ``receiver.lock``: held by the one receiver that writes this directory.

In memory the receiver holds one export request at a time per worker thread (gRPC's
4 MiB message limit, as the OpenTelemetry collector's); the reader streams the files and
keeps only what a query answers: the spans of one trace, or one small summary per trace.

A line cut short (a reader racing a write) is skipped. The receiver appends to the files of
an earlier run, so traces survive a restart of ``cinema up`` like the rest of its data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import re
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

import grpc
from google.protobuf.descriptor import EnumDescriptor
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
SPANS_FILE = "spans.jsonl"
OLD_SPANS_FILE = "spans.1.jsonl"
MAX_TEXT_CHARS = 256
#: Span attributes worth a line in a waterfall: what was called, the statement, the outcome.
#: Names of both the older and the current semantic conventions, and Envoy's own tags.
KEPT_ATTRIBUTES = frozenset(
    {
        "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code",
        "db.system", "db.name", "db.statement", "db.query.text",
        "http.method", "http.request.method", "http.url", "url.path",
        "http.status_code", "http.response.status_code",
        "grpc.status_code", "grpc.message", "upstream_cluster", "response_flags",
        "guid:x-request-id", "error", "error.type",
    }
)  # fmt: skip
#: How many recent traces :meth:`TraceStore.latest_interesting` looks at.
INTERESTING_WINDOW = 20
# Worker threads of the receiver: exports are small appends under one lock, so a few suffice.
_WORKERS = 4
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

AttributeValue = str | int | float | bool


def traces_dir(data_dir: pathlib.Path) -> pathlib.Path:
    """Where the spans of the system with data directory ``data_dir`` are kept."""
    return data_dir / "traces"


def normalize_trace_id(text: str) -> str | None:
    """``text`` as the store writes trace ids (32 lower-case hex digits), None if it is none."""
    candidate = text.strip().lower()
    return candidate if _TRACE_ID.match(candidate) else None


@dataclass(frozen=True)
class Span:
    """One received span, flattened: what the store writes as a line and reads back."""

    trace_id: str
    span_id: str
    parent_span_id: str  # empty for a root span
    name: str
    service: str
    start_ns: int
    end_ns: int
    kind: str = "INTERNAL"
    status: str = "UNSET"  # UNSET, OK or ERROR
    status_message: str = ""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_error(self) -> bool:
        """Whether the span failed: status ERROR, or Envoy's ``error`` tag."""
        return self.status == "ERROR" or str(self.attributes.get("error", "")).lower() == "true"

    def to_json(self) -> str:
        """The span as one line of ``spans.jsonl`` (without the newline)."""
        return json.dumps(
            {
                "trace_id": self.trace_id,
                "span_id": self.span_id,
                "parent_span_id": self.parent_span_id,
                "name": self.name,
                "kind": self.kind,
                "service": self.service,
                "start_ns": self.start_ns,
                "end_ns": self.end_ns,
                "status": self.status,
                "status_message": self.status_message,
                "attributes": dict(self.attributes),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> Span | None:
        """The span a line of ``spans.jsonl`` holds; None for a line that holds none (cut
        short by a concurrent write, or not written by this store)."""
        try:
            record = json.loads(line)
            attributes = record.get("attributes") or {}
            return cls(
                trace_id=str(record["trace_id"]),
                span_id=str(record["span_id"]),
                parent_span_id=str(record.get("parent_span_id") or ""),
                name=str(record["name"]),
                service=str(record.get("service") or "unknown_service"),
                start_ns=int(record["start_ns"]),
                end_ns=int(record["end_ns"]),
                kind=str(record.get("kind") or "INTERNAL"),
                status=str(record.get("status") or "UNSET"),
                status_message=str(record.get("status_message") or ""),
                attributes={
                    str(key): value
                    for key, value in dict(attributes).items()
                    if isinstance(value, str | int | float | bool)
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


# -- receiving ---------------------------------------------------------------------------


def _text(value: str) -> str:
    return value if len(value) <= MAX_TEXT_CHARS else value[: MAX_TEXT_CHARS - 1] + "…"


def _value(value: common_pb2.AnyValue) -> AttributeValue | None:
    which = value.WhichOneof("value")
    if which == "string_value":
        return _text(value.string_value)
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return _text(value.bytes_value.hex())
    if which == "array_value":
        return _text(", ".join(str(_value(item)) for item in value.array_value.values))
    return None  # a key-value list or an empty value: nothing a waterfall shows


def _attributes(
    pairs: Iterable[common_pb2.KeyValue], keep: frozenset[str] | None = None
) -> dict[str, AttributeValue]:
    kept: dict[str, AttributeValue] = {}
    for pair in pairs:
        if keep is not None and pair.key not in keep:
            continue
        value = _value(pair.value)
        if value is not None:
            kept[pair.key] = value
    return kept


def _enum_name(enum: EnumDescriptor, value: int, prefix: str) -> str:
    known = enum.values_by_number.get(value)
    # A value newer than these protos is shown as its number rather than failing the export.
    return known.name.removeprefix(prefix) if known is not None else str(value)


def _flatten(span: trace_pb2.Span, service: str) -> Span:
    attributes = _attributes(span.attributes, KEPT_ATTRIBUTES)
    # The SDK records a raised exception as an event; its type and message say what failed.
    for event in span.events:
        if event.name == "exception":
            exception = _attributes(
                event.attributes, frozenset({"exception.type", "exception.message"})
            )
            attributes.update(exception)
            break
    return Span(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=_text(span.name),
        service=service,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        kind=_enum_name(trace_pb2.Span.SpanKind.DESCRIPTOR, span.kind, "SPAN_KIND_"),
        status=_enum_name(trace_pb2.Status.StatusCode.DESCRIPTOR, span.status.code, "STATUS_CODE_"),
        status_message=_text(span.status.message),
        attributes=attributes,
    )


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> Iterator[Span]:
    """The spans of one OTLP export request, flattened, each with its resource's
    ``service.name``; spans without a valid trace and span id are left out."""
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes, frozenset({"service.name"}))
        service = str(resource.get("service.name") or "unknown_service")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                # Ids of the wrong size are invalid in OTLP: no trace could be found by them.
                if len(span.trace_id) == 16 and len(span.span_id) == 8:
                    yield _flatten(span, service)


class _SpanFile:
    """``spans.jsonl``, appended to by every receiving thread, rotated at its size cap."""

    def __init__(self, directory: pathlib.Path, max_bytes: int) -> None:
        self.path = directory / SPANS_FILE
        self._old_path = directory / OLD_SPANS_FILE
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._closed = False
        directory.mkdir(parents=True, exist_ok=True)
        # Two receivers on one directory would rotate each other's files away.
        self._lock_file: IO[str] | None = (directory / "receiver.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file: IO[bytes] | None = self.path.open("ab")
        except BlockingIOError:
            self._lock_file.close()
            raise OSError(f"another trace store is writing {directory}") from None
        except OSError:
            self._lock_file.close()
            raise
        self._size = os.fstat(self._file.fileno()).st_size

    def append(self, lines: Sequence[bytes]) -> None:
        """Write ``lines`` (each ending in a newline), rotating first whenever the next
        line would take the file past the cap: no file holds more than the cap, unless
        one line alone is longer (a line is a few KiB at most, see MAX_TEXT_CHARS)."""
        with self._lock:
            pending: list[bytes] = []
            pending_bytes = 0
            for line in lines:
                written = self._size + pending_bytes
                if written and written + len(line) > self._max_bytes:
                    self._write(pending)
                    pending, pending_bytes = [], 0
                    self._rotate()
                pending.append(line)
                pending_bytes += len(line)
            self._write(pending)

    def _write(self, lines: list[bytes]) -> None:
        if not lines or self._closed:
            return
        if self._file is None:  # a rotation failed half-way (a full disk): try again
            self._file = self.path.open("ab")
            self._size = os.fstat(self._file.fileno()).st_size
        data = b"".join(lines)
        self._file.write(data)
        self._file.flush()  # readers see every export as soon as it is answered
        self._size += len(data)

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        os.replace(self.path, self._old_path)
        self._file = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        """Close the file; an export still running past the grace period writes nothing."""
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._lock_file is not None:
                self._lock_file.close()  # and so the lock is released
                self._lock_file = None


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP's ``TraceService.Export``: every span of the request goes to the file."""

    def __init__(self, sink: _SpanFile) -> None:
        self._sink = sink
        self._failing = False

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        lines = [span.to_json().encode() + b"\n" for span in spans_of(request)]
        try:
            self._sink.append(lines)
        except OSError as error:
            # A full disk: say so once, and answer "rejected" rather than an error status,
            # which exporters would retry, to no avail, for every batch.
            if not self._failing:
                logger.error("cannot keep spans in %s: %s", self._sink.path, error)
            self._failing = True
            return trace_service_pb2.ExportTraceServiceResponse(
                partial_success=trace_service_pb2.ExportTracePartialSuccess(
                    rejected_spans=len(lines), error_message=f"trace store: {error}"
                )
            )
        if self._failing:
            logger.info("keeping spans in %s again", self._sink.path)
            self._failing = False
        return trace_service_pb2.ExportTraceServiceResponse()


class TraceReceiver:
    """An OTLP/gRPC trace receiver on 127.0.0.1 that keeps what it receives in
    ``DATA_DIR/traces/`` (see the module's docstring for the files and their bounds).

    ``port`` 0 picks a free port; :meth:`start` returns the bound one.
    """

    def __init__(
        self,
        data_dir: pathlib.Path,
        port: int = 0,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
        self.directory = traces_dir(data_dir)
        self.requested_port = port
        self.max_file_bytes = max_file_bytes
        self.port: int | None = None
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._sink: _SpanFile | None = None

    @property
    def spans_path(self) -> pathlib.Path:
        return self.directory / SPANS_FILE

    def start(self) -> int:
        """Open the files and serve; the bound port. OSError when the port is taken or
        another receiver writes the directory."""
        if self._server is not None:
            raise RuntimeError("the receiver has started already")
        sink = _SpanFile(self.directory, self.max_file_bytes)
        executor = futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="otlp")
        # A second process must not silently share the port: grpcio enables SO_REUSEPORT.
        server = grpc.server(executor, options=[("grpc.so_reuseport", 0)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(sink), server
        )
        address = f"127.0.0.1:{self.requested_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio's word for "cannot bind"
            port = 0
        if port == 0:
            sink.close()
            executor.shutdown(wait=False)
            raise OSError(f"cannot bind {address}: the port is in use")
        server.start()
        self._server, self._executor, self._sink, self.port = server, executor, sink, port
        return port

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving: exports in flight get ``grace`` seconds, then the files close."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None


#: The message :func:`serve` logs once bound. It ends as ``cinema serve``'s does
#: ("... listening on port N"), so ``services.launcher._SERVICE_PORT`` reads it.
LISTENING_MESSAGE = "trace store keeping spans in %s, listening on port %d"


def serve(
    data_dir: pathlib.Path,
    *,
    port: int = 0,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    grace: float = 1.0,
) -> int:
    """Run a receiver until SIGTERM or SIGINT: ``cinema trace-store``. Its exit status.

    Once bound it logs :data:`LISTENING_MESSAGE`, e.g. ``trace store keeping spans in
    /x/cinema-data/traces, listening on port 40117``; a launcher that passed port 0 reads
    the port there. A failure to start is logged at ERROR and gives status 1.
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    receiver = TraceReceiver(data_dir, port=port, max_file_bytes=max_file_bytes)
    try:
        bound = receiver.start()
    except OSError as error:
        logger.error("trace store did not start: %s", error)
        return 1
    logger.info(LISTENING_MESSAGE, receiver.directory.resolve(), bound)
    stop.wait()
    logger.info("trace store stopping")
    receiver.stop(grace)
    logger.info("trace store stopped")
    return 0


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceSummary:
    """What a list of traces shows of one: when, how long, how big, whether it failed."""

    trace_id: str
    start_ns: int
    end_ns: int
    span_count: int
    error_count: int
    services: tuple[str, ...]
    root_name: str
    root_service: str

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @classmethod
    def of(cls, spans: Iterable[Span]) -> TraceSummary | None:
        """The summary of one trace's spans; None for no spans."""
        accumulator: _Accumulator | None = None
        for span in spans:
            if accumulator is None:
                accumulator = _Accumulator(span)
            else:
                accumulator.add(span)
        return accumulator.summary() if accumulator else None


class _Accumulator:
    """A trace's summary, built one span at a time, so listing traces keeps no spans."""

    def __init__(self, span: Span) -> None:
        self.trace_id = span.trace_id
        self.start_ns, self.end_ns = span.start_ns, span.end_ns
        self.span_count = 1
        self.error_count = int(span.is_error)
        self.services = {span.service}
        self.root = (span.name, span.service)
        self._root_rank = (span.parent_span_id != "", span.start_ns)

    def add(self, span: Span) -> None:
        self.start_ns = min(self.start_ns, span.start_ns)
        self.end_ns = max(self.end_ns, span.end_ns)
        self.span_count += 1
        self.error_count += int(span.is_error)
        self.services.add(span.service)
        # The root is the earliest span without a parent; while none has arrived (Envoy
        # exports its span last), the earliest span stands in.
        rank = (span.parent_span_id != "", span.start_ns)
        if rank < self._root_rank:
            self.root, self._root_rank = (span.name, span.service), rank

    def summary(self) -> TraceSummary:
        return TraceSummary(
            trace_id=self.trace_id,
            start_ns=self.start_ns,
            end_ns=self.end_ns,
            span_count=self.span_count,
            error_count=self.error_count,
            services=tuple(sorted(self.services)),
            root_name=self.root[0],
            root_service=self.root[1],
        )


class InterestingTrace(NamedTuple):
    """A trace worth looking at, and why (one phrase, for a header line)."""

    summary: TraceSummary
    reason: str


class TraceStore:
    """Reads what a :class:`TraceReceiver` keeps in ``DATA_DIR/traces/``.

    Every query reads the files afresh (the receiver may be appending meanwhile), so it
    sees every export answered before it began.
    """

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.directory = traces_dir(data_dir)

    def traces(self, limit: int | None = None) -> list[TraceSummary]:
        """A summary of every trace kept, the most recent (latest start) first; at most
        ``limit`` of them."""
        accumulators: dict[str, _Accumulator] = {}
        for span in self._spans():
            accumulator = accumulators.get(span.trace_id)
            if accumulator is None:
                accumulators[span.trace_id] = _Accumulator(span)
            else:
                accumulator.add(span)
        summaries = sorted(
            (a.summary() for a in accumulators.values()),
            key=lambda s: (s.start_ns, s.trace_id),
            reverse=True,
        )
        return summaries if limit is None else summaries[:limit]

    def spans(self, trace_id: str) -> list[Span]:
        """The spans of one trace (any spelling :func:`normalize_trace_id` accepts), by
        start time; empty when none is kept."""
        wanted = normalize_trace_id(trace_id)
        if wanted is None:
            return []
        # The id's text on the line is a cheap filter before parsing it.
        found = [span for span in self._spans(wanted) if span.trace_id == wanted]
        return sorted(found, key=lambda s: (s.start_ns, -s.end_ns))

    def latest_interesting(self, window: int = INTERESTING_WINDOW) -> InterestingTrace | None:
        """Of the ``window`` most recent traces: the most recent one with a failed span,
        else the slowest of them. None when no trace is kept.

        Recent and failed first, because that is the trace one looks for after a call went
        wrong; the slowest otherwise, because that is the one to look at after a slow call.
        """
        recent = self.traces(limit=window)
        if not recent:
            return None
        for summary in recent:
            if summary.error_count:
                return InterestingTrace(summary, "the latest trace with an error")
        slowest = max(recent, key=lambda s: s.duration_ns)
        if len(recent) == 1:
            return InterestingTrace(slowest, "the only trace kept")
        return InterestingTrace(
            slowest, f"the slowest of the last {len(recent)} traces (none has an error)"
        )

    def _spans(self, needle: str | None = None) -> Iterator[Span]:
        """Every span kept, oldest file first; only lines containing ``needle`` if given."""
        with contextlib.ExitStack() as files:
            # The current file first: if a rotation comes between the two opens, the
            # "old" file is then the one already open, and is not read twice.
            current = _open(self.directory / SPANS_FILE, files)
            old = _open(self.directory / OLD_SPANS_FILE, files)
            if current is not None and old is not None and _same_file(current, old):
                old = None
            for handle in (old, current):
                if handle is None:
                    continue
                for line in handle:
                    if needle is not None and needle not in line:
                        continue
                    span = Span.from_json(line)
                    if span is not None:
                        yield span


def _open(path: pathlib.Path, files: contextlib.ExitStack) -> IO[str] | None:
    try:
        return files.enter_context(path.open(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return None


def _same_file(first: IO[Any], second: IO[Any]) -> bool:
    a, b = os.fstat(first.fileno()), os.fstat(second.fileno())
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
