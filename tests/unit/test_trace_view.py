"""The waterfall of ``cinema trace`` on hand-built spans, and how the command picks and
reads traces from the files the trace store writes."""

from __future__ import annotations

import io
import pathlib

from services import trace_view
from services.trace_store import OLD_SPANS_FILE, SPANS_FILE, Span, TraceStore, TraceSummary

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# 2026-01-02 03:04:05 UTC, in nanoseconds: spans below start this many ms after it.
EPOCH_NS = 1_767_323_045_000_000_000


def span(
    span_id: str,
    start_ms: float,
    end_ms: float,
    *,
    parent: str = "",
    name: str | None = None,
    service: str = "order",
    status: str = "UNSET",
    message: str = "",
    trace_id: str = TRACE,
    **attributes: str,
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id.ljust(16, "0"),
        parent_span_id=parent.ljust(16, "0") if parent else "",
        name=name or f"span-{span_id}",
        service=service,
        start_ns=EPOCH_NS + int(start_ms * 1_000_000),
        end_ns=EPOCH_NS + int(end_ms * 1_000_000),
        status=status,
        status_message=message,
        attributes=attributes,
    )


def span_lines(lines: list[str]) -> list[str]:
    """The span lines of a waterfall (without its column header)."""
    assert lines[0].split()[:2] == ["start", "ms"]
    return lines[1:]


def name_column(lines: list[str]) -> list[str]:
    """The last column of each span line: the indented name and its detail."""
    column = lines[0].rindex("span")
    return [line[column:] for line in span_lines(lines)]


# -- the waterfall -------------------------------------------------------------------------


def test_children_follow_their_parent_by_start_time() -> None:
    spans = [
        span("b", 30, 90, parent="r"),
        span("r", 0, 100, service="envoy"),
        span("a1", 12, 20, parent="a"),
        span("a", 10, 25, parent="r"),
        span("b1", 40, 50, parent="b"),
    ]
    rows = trace_view.tree(spans)
    assert [(row.span.name, row.depth) for row in rows] == [
        ("span-r", 0),
        ("span-a", 1),
        ("span-a1", 2),
        ("span-b", 1),
        ("span-b1", 2),
    ]
    assert name_column(trace_view.render(spans)) == [
        "span-r",
        "  span-a",
        "    span-a1",
        "  span-b",
        "    span-b1",
    ]


def test_columns_show_start_duration_and_where_the_span_lies() -> None:
    spans = [
        span("r", 0, 100, service="envoy"),
        span("c", 50, 100, parent="r", service="movie"),
        span("d", 0, 10, parent="r", service="movie"),
        span("e", 40, 40.001, parent="r", service="movie"),  # a blip still gets a mark
    ]
    lines = trace_view.render(spans, bar_width=20)
    assert lines[0] == " start ms    dur ms  |0          100.00 ms|         service  span"
    assert span_lines(lines) == [
        "     0.00    100.00  |====================|         envoy    span-r",
        "     0.00     10.00  |==                  |         movie      span-d",
        "    40.00      0.00  |        =           |         movie      span-e",
        "    50.00     50.00  |          ==========|         movie      span-c",
    ]


def test_a_failed_span_is_marked_with_its_message() -> None:
    spans = [
        span("r", 0, 10, service="envoy", error="true"),  # Envoy's tag for a failed request
        span("u", 1, 5, parent="r", service="user", status="ERROR", message="user  not\nfound"),
        span("q", 2, 3, parent="u", service="user", status="OK", **{"db.statement": "SELECT 1"}),
    ]
    lines = span_lines(trace_view.render(spans))
    assert [line.split("|")[2][2:7] for line in lines] == ["ERROR", "ERROR", "     "]
    assert lines[1].endswith("span-u  user not found")
    assert lines[2].endswith("span-q  SELECT 1")
    assert all("\033[" not in line for line in lines)
    coloured = span_lines(trace_view.render(spans, colour=True))
    assert "\033[31mERROR\033[0m" in coloured[1]
    # Colour does not shift the columns after it.
    assert coloured[1].replace("\033[31m", "").replace("\033[0m", "") == lines[1]


def test_a_span_whose_parent_never_came_is_shown_at_the_top() -> None:
    spans = [
        span("r", 0, 100, service="envoy"),
        span("o", 20, 30, parent="lost", service="movie"),
        span("o1", 21, 22, parent="o", service="movie"),
        span("a", 5, 50, parent="r"),
    ]
    rows = trace_view.tree(spans)
    assert [(row.span.name, row.depth, row.orphan) for row in rows] == [
        ("span-r", 0, False),
        ("span-a", 1, False),
        ("span-o", 0, True),
        ("span-o1", 1, False),
    ]
    assert name_column(trace_view.render(spans))[2] == (
        "span-o (parent lost000000000000 not received)"
    )


def test_every_span_appears_once_even_in_a_parent_loop() -> None:
    spans = [span("x", 0, 10, parent="y"), span("y", 1, 5, parent="x"), span("z", 2, 3)]
    rows = trace_view.tree(spans)
    assert sorted(row.span.name for row in rows) == ["span-x", "span-y", "span-z"]
    assert [(row.span.name, row.depth) for row in rows] == [
        ("span-z", 0),
        ("span-x", 0),
        ("span-y", 1),
    ]


def test_an_empty_trace_renders_nothing() -> None:
    assert trace_view.render([]) == []
    assert trace_view.tree([]) == []
    assert TraceSummary.of([]) is None


def test_a_trace_of_one_instant_span() -> None:
    lines = trace_view.render([span("r", 0, 0)], bar_width=8)
    assert "|=       |" in lines[1]


def test_header_says_which_trace_and_why() -> None:
    spans = [
        span("r", 0, 42.5, service="envoy", name="ingress"),
        span("u", 1, 5, parent="r", service="user", status="ERROR"),
        span("o", 6, 40, parent="r"),
    ]
    summary = TraceSummary.of(spans)
    assert summary is not None
    assert trace_view.header(summary, "the latest trace with an error") == (
        f"The latest trace with an error: trace {TRACE}: envoy ingress, 42.50 ms, 3 spans, "
        "1 failed, services: envoy, order, user"
    )
    assert trace_view.header(summary).startswith(f"Trace {TRACE}: envoy ingress, 42.50 ms")
    line = trace_view.list_line(summary)
    assert f"  {TRACE}      42.50 ms     3 spans  ERROR  envoy ingress" in line


# -- picking and reading traces ------------------------------------------------------------


def keep(data_dir: pathlib.Path, spans: list[Span], file: str = SPANS_FILE) -> None:
    directory = data_dir / "traces"
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / file).open("a") as out:
        out.writelines(s.to_json() + "\n" for s in spans)


def trace_id(n: int) -> str:
    return f"{n:032x}"


def test_latest_interesting_is_the_latest_failed_trace_else_the_slowest(
    tmp_path: pathlib.Path,
) -> None:
    store = TraceStore(tmp_path)
    assert store.latest_interesting() is None
    keep(tmp_path, [span("a", 0, 5, trace_id=trace_id(1)), span("b", 10, 90, trace_id=trace_id(2))])
    keep(tmp_path, [span("c", 20, 30, trace_id=trace_id(3))])
    picked = store.latest_interesting()
    assert picked is not None
    assert picked.summary.trace_id == trace_id(2)
    assert picked.reason == "the slowest of the last 3 traces (none has an error)"
    keep(tmp_path, [span("d", 1, 2, trace_id=trace_id(4), status="ERROR")])
    keep(tmp_path, [span("e", 2, 3, trace_id=trace_id(5), status="ERROR")])
    picked = store.latest_interesting()
    assert picked is not None
    # Traces 2 and 3 started later but did not fail; of the two that did, 5 is the latest.
    assert (picked.summary.trace_id, picked.reason) == (
        trace_id(5),
        "the latest trace with an error",
    )


def test_recent_traces_come_first_and_spans_span_both_files(tmp_path: pathlib.Path) -> None:
    keep(
        tmp_path, [span("r", 0, 100, service="envoy"), span("a", 1, 2, parent="r")], OLD_SPANS_FILE
    )
    keep(tmp_path, [span("b", 3, 4, parent="r", service="movie")])
    keep(tmp_path, [span("x", 200, 201, trace_id=trace_id(9))])
    # A line cut short by a write in progress is skipped.
    with (tmp_path / "traces" / SPANS_FILE).open("a") as out:
        out.write('{"trace_id": "' + TRACE + '", "span_id": "c0')
    store = TraceStore(tmp_path)
    summaries = store.traces()
    assert [s.trace_id for s in summaries] == [trace_id(9), TRACE]
    assert summaries[1].span_count == 3
    assert summaries[1].services == ("envoy", "movie", "order")
    assert (summaries[1].root_service, summaries[1].root_name) == ("envoy", "span-r")
    assert store.traces(limit=1) == summaries[:1]
    assert [s.name for s in store.spans(TRACE.upper())] == ["span-r", "span-a", "span-b"]
    assert store.spans(trace_id(7)) == []
    assert store.spans("not a trace id") == []


def run_main(
    data_dir: pathlib.Path, trace: str | None = None, *, list_traces: bool = False
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = trace_view.main(data_dir, trace, list_traces=list_traces, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_command_says_so_in_one_line_when_there_is_nothing(tmp_path: pathlib.Path) -> None:
    for trace, list_traces in ((None, False), (None, True), (TRACE, False)):
        status, out, err = run_main(tmp_path, trace, list_traces=list_traces)
        assert (status, out) == (1, "")
        assert len(err.splitlines()) == 1
    keep(tmp_path, [span("r", 0, 1)])
    status, _, err = run_main(tmp_path, trace_id(8))
    assert status == 1
    assert err == (
        f"cinema trace: no trace {trace_id(8)} in {tmp_path / 'traces'} "
        "(`cinema trace --list` shows the recent ones)\n"
    )
    status, _, err = run_main(tmp_path, "xyz")
    assert (status, err) == (1, "cinema trace: 'xyz' is not a trace id (32 hex digits)\n")
    status, _, _ = run_main(tmp_path, TRACE, list_traces=True)
    assert status == 2
    status, out, _ = run_main(tmp_path, TRACE)
    assert status == 0
    assert out.splitlines()[0] == f"Trace {TRACE}: order span-r, 1.00 ms, 1 span, services: order"
