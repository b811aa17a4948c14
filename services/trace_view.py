"""``cinema trace``: one trace as a waterfall in a terminal, or a list of recent traces.

A waterfall has one line per span, children under their parent by start time (here with
a bar of 16 characters; the default is 40)::

     start ms    dur ms  |0       12.60 ms|         service  span
         0.00     12.60  |================|         envoy    ingress
         2.24      9.46  |  ============= |         order      OrderService/CreateOrder
         3.40      3.08  |    =====       |  ERROR  user         UserService/GetUser  not found
         9.35      1.09  |           ===  |         order        INSERT cinema  INSERT INTO ...

the span's start (ms after the trace's first span began), its duration, a bar that places
it in the trace, ERROR for a failed span, the service (its resource's ``service.name``),
and the span's name, indented by depth, then the error's message or the database
statement. A span whose parent was not received (not exported yet, or dropped) is shown
at the top level, marked. Plain text; ERROR in red only when the caller asks for colour
(``cinema trace`` does on a terminal, unless ``NO_COLOR`` is set).
"""

from __future__ import annotations

import datetime as dt
import pathlib
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from services.trace_store import Span, TraceStore, TraceSummary, normalize_trace_id

BAR_WIDTH = 40
_RED, _RESET = "\033[31m", "\033[0m"
_MAX_DETAIL_CHARS = 80


@dataclass(frozen=True)
class Row:
    """A span in waterfall order: its depth in the tree, and whether it stands at the top
    level only because its parent is missing."""

    span: Span
    depth: int
    orphan: bool = False


def _order_key(span: Span) -> tuple[int, int, str]:
    # By start; of two that start together the longer (the enclosing one) first.
    return span.start_ns, -span.end_ns, span.name


def tree(spans: Sequence[Span]) -> list[Row]:
    """``spans`` in waterfall order: each span followed by its children, depth first,
    siblings by start time. Roots, and spans whose parent is not among ``spans``, are at
    depth 0. Every span appears exactly once, even in a (malformed) parent loop."""
    ids = {span.span_id for span in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    tops: list[Span] = []
    for span in spans:
        if span.parent_span_id in ids and span.parent_span_id != span.span_id:
            children[span.parent_span_id].append(span)
        else:
            tops.append(span)
    rows: list[Row] = []
    placed: set[int] = set()  # id() of each span placed: span ids may repeat

    def place(top: Span) -> None:
        stack = [(top, 0)]
        while stack:
            span, depth = stack.pop()
            if id(span) in placed:
                continue
            placed.add(id(span))
            orphan = depth == 0 and span.parent_span_id != ""
            rows.append(Row(span, depth, orphan))
            below = sorted(children.get(span.span_id, ()), key=_order_key, reverse=True)
            stack.extend((child, depth + 1) for child in below)

    for top in sorted(tops, key=_order_key):
        place(top)
    # Spans in a parent loop are reachable from no top: start each loop at its earliest.
    for span in sorted(spans, key=_order_key):
        if id(span) not in placed:
            place(span)
    return rows


def _bar(span: Span, origin_ns: int, total_ns: int, width: int) -> str:
    """Where ``span`` lies in the trace, ``width`` characters for the whole of it; at
    least one character, so the shortest span still shows."""
    if total_ns <= 0:
        first, last = 0, 1
    else:
        first = min(width - 1, (span.start_ns - origin_ns) * width // total_ns)
        last = -(-(span.end_ns - origin_ns) * width // total_ns)  # rounded up
        last = max(first + 1, min(width, last))
    return " " * first + "=" * (last - first) + " " * (width - last)


def _detail(span: Span) -> str:
    if span.is_error:
        text = span.status_message or str(span.attributes.get("exception.message", ""))
    else:
        text = str(
            span.attributes.get("db.statement") or span.attributes.get("db.query.text") or ""
        )
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[: _MAX_DETAIL_CHARS - 1] + "…"
    return f"  {text}" if text else ""


def _ms(nanoseconds: int) -> str:
    return f"{nanoseconds / 1e6:.2f}"


def render(spans: Sequence[Span], *, bar_width: int = BAR_WIDTH, colour: bool = False) -> list[str]:
    """The waterfall of one trace's spans: a column header, then one line per span (see
    the module's docstring). No lines for no spans."""
    if not spans:
        return []
    origin = min(span.start_ns for span in spans)
    total = max(span.end_ns for span in spans) - origin
    service_width = max(len("service"), *(len(span.service) for span in spans))
    scale_end = f"{_ms(total)} ms"
    scale = "0" + scale_end.rjust(bar_width - 1) if bar_width > len(scale_end) + 1 else "0"
    lines = [
        f"{'start ms':>9} {'dur ms':>9}  |{scale:<{bar_width}}|  {'':5}  "
        f"{'service':<{service_width}}  span"
    ]
    for row in tree(spans):
        span = row.span
        status = f"{'ERROR' if span.is_error else '':5}"  # padded before any colour
        if colour and span.is_error:
            status = f"{_RED}{status}{_RESET}"
        name = "  " * row.depth + span.name
        if row.orphan:
            name += f" (parent {span.parent_span_id} not received)"
        lines.append(
            f"{_ms(span.start_ns - origin):>9} {_ms(span.duration_ns):>9}  "
            f"|{_bar(span, origin, total, bar_width)}|  {status}  "
            f"{span.service:<{service_width}}  {name}{_detail(span)}".rstrip()
        )
    return lines


def _spans(count: int) -> str:
    return f"{count} span" if count == 1 else f"{count} spans"


def header(summary: TraceSummary, reason: str | None = None) -> str:
    """One line about a trace: its id, root span, duration, size and services; first
    ``reason`` (why this trace was picked), if given."""
    errors = f", {summary.error_count} failed" if summary.error_count else ""
    text = (
        f"trace {summary.trace_id}: {summary.root_service} {summary.root_name}, "
        f"{_ms(summary.duration_ns)} ms, {_spans(summary.span_count)}{errors}, "
        f"services: {', '.join(summary.services)}"
    )
    return f"{reason[:1].upper()}{reason[1:]}: {text}" if reason else "T" + text[1:]


def list_line(summary: TraceSummary) -> str:
    """One line of ``cinema trace --list``: local start time, id, duration, spans, ERROR
    if a span failed, and the root span."""
    started = dt.datetime.fromtimestamp(summary.start_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S.%f")
    status = "ERROR" if summary.error_count else ""
    return (
        f"{started[:-3]}  {summary.trace_id}  {_ms(summary.duration_ns):>9} ms  "
        f"{_spans(summary.span_count):>10}  {status:5}  {summary.root_service} {summary.root_name}"
    ).rstrip()


def main(
    data_dir: pathlib.Path,
    trace_id: str | None,
    *,
    list_traces: bool = False,
    limit: int = 20,
    colour: bool = False,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """``cinema trace``; its exit status. 1, after one line on ``err``, when there is no
    such trace or none at all; 2 for arguments that do not go together."""
    out = out or sys.stdout
    err = err or sys.stderr
    store = TraceStore(data_dir)
    nothing = (
        f"cinema trace: no traces in {store.directory} yet; start the system with "
        "`cinema up --traces` and make a call"
    )
    if list_traces:
        if trace_id is not None:
            print("cinema trace: give a TRACE_ID or --list, not both", file=err)
            return 2
        if limit < 1:
            print("cinema trace: --limit must be at least 1", file=err)
            return 2
        summaries = store.traces(limit=limit)
        if not summaries:
            print(nothing, file=err)
            return 1
        for listed in summaries:
            print(list_line(listed), file=out)
        return 0
    reason: str | None = None
    if trace_id is None:
        picked = store.latest_interesting()
        if picked is None:
            print(nothing, file=err)
            return 1
        wanted, reason = picked.summary.trace_id, picked.reason
    else:
        normalized = normalize_trace_id(trace_id)
        if normalized is None:
            print(f"cinema trace: {trace_id!r} is not a trace id (32 hex digits)", file=err)
            return 1
        wanted = normalized
    spans = store.spans(wanted)
    summary = TraceSummary.of(spans)
    if summary is None:
        print(
            f"cinema trace: no trace {wanted} in {store.directory} "
            "(`cinema trace --list` shows the recent ones)",
            file=err,
        )
        return 1
    print(header(summary, reason), file=out)
    for line in render(spans, colour=colour):
        print(line, file=out)
    return 0
