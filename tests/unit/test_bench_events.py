"""The events benchmark's arithmetic: /metrics parsing, histogram quantiles, the report."""

from __future__ import annotations

import math
import pathlib

import pytest

from bench import prometheus
from bench.events import (
    BEGIN,
    END,
    Burst,
    Lag,
    Measurement,
    Report,
    foreign_share,
    machine_jiffies,
    markdown,
    svg,
    write_section,
)
from bench.stats import LatencyHistogram

EXPOSITION = """\
# HELP cinema_event_lag_seconds Time from the commit of a change to the commit of its effect.
# TYPE cinema_event_lag_seconds histogram
cinema_event_lag_seconds_bucket{consumer="movie",event="cinema.v1.CastDeleted",le="0.005"} 2.0
cinema_event_lag_seconds_bucket{consumer="movie",event="cinema.v1.CastDeleted",le="0.01"} 6.0
cinema_event_lag_seconds_bucket{consumer="movie",event="cinema.v1.CastDeleted",le="+Inf"} 8.0
cinema_event_lag_seconds_count{consumer="movie",event="cinema.v1.CastDeleted"} 8.0
cinema_event_lag_seconds_sum{consumer="movie",event="cinema.v1.CastDeleted"} 0.1
cinema_event_lag_seconds_bucket{consumer="user",event="cinema.v1.OrderPaid",le="0.005"} 1.0
cinema_event_lag_seconds_bucket{consumer="user",event="cinema.v1.OrderPaid",le="0.01"} 1.0
cinema_event_lag_seconds_bucket{consumer="user",event="cinema.v1.OrderPaid",le="+Inf"} 1.0
# HELP cinema_events_handled_total Events this process's consumer handled.
# TYPE cinema_events_handled_total counter
cinema_events_handled_total{consumer="movie",event="cinema.v1.CastDeleted",outcome="applied"} 7.0
cinema_events_handled_total{consumer="movie",event="cinema.v1.CastDeleted",outcome="duplicate"} 1.0
cinema_events_handled_total{consumer="user",event="cinema.v1.OrderPaid",outcome="applied"} 3.0
"""


def test_counters_sum_the_series_whose_labels_match() -> None:
    samples = prometheus.parse(EXPOSITION)
    name = "cinema_events_handled_total"
    assert prometheus.total(samples, name, consumer="movie", outcome="applied") == 7.0
    assert prometheus.total(samples, name, outcome="applied") == 10.0
    assert prometheus.total(samples, name) == 11.0
    assert prometheus.total(samples, name, consumer="order") == 0.0


def test_buckets_of_one_series_and_of_several() -> None:
    samples = prometheus.parse(EXPOSITION)
    movie = prometheus.buckets(samples, "cinema_event_lag_seconds", consumer="movie")
    assert movie == {0.005: 2.0, 0.01: 6.0, math.inf: 8.0}
    assert prometheus.observations(movie) == 8.0
    both = prometheus.buckets(samples, "cinema_event_lag_seconds")
    assert both == {0.005: 3.0, 0.01: 7.0, math.inf: 9.0}


def test_the_change_between_two_scrapes() -> None:
    before = {0.005: 2.0, 0.01: 6.0, math.inf: 8.0}
    after = {0.005: 3.0, 0.01: 10.0, math.inf: 12.0}
    assert prometheus.bucket_delta(after, before) == {0.005: 1.0, 0.01: 4.0, math.inf: 4.0}
    # A series born after the first scrape counts from zero.
    assert prometheus.bucket_delta(after, {}) == after


def test_quantiles_interpolate_inside_the_bucket_that_holds_the_rank() -> None:
    histogram = {0.01: 50.0, 0.02: 90.0, 0.05: 100.0, math.inf: 100.0}
    # Rank 25 of 100 lies half-way through the first bucket, which starts at 0.
    assert prometheus.quantile(0.25, histogram) == pytest.approx(0.005)
    assert prometheus.quantile(0.5, histogram) == pytest.approx(0.01)
    # Rank 70: 20 of the 40 observations of (0.01, 0.02].
    assert prometheus.quantile(0.7, histogram) == pytest.approx(0.015)
    assert prometheus.quantile(0.99, histogram) == pytest.approx(0.02 + 0.03 * 9 / 10)
    assert prometheus.quantile(1.0, histogram) == pytest.approx(0.05)


def test_a_rank_above_every_finite_bound_answers_the_largest_one() -> None:
    histogram = {0.01: 5.0, 0.1: 8.0, math.inf: 10.0}
    assert prometheus.quantile(0.99, histogram) == 0.1


def test_empty_or_malformed_histograms_answer_nan() -> None:
    assert math.isnan(prometheus.quantile(0.5, {}))
    assert math.isnan(prometheus.quantile(0.5, {0.01: 0.0, math.inf: 0.0}))
    assert math.isnan(prometheus.quantile(0.5, {0.01: 3.0}))  # no +Inf bucket
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        prometheus.quantile(1.5, {math.inf: 1.0})


def test_burst_rates_come_from_the_spans() -> None:
    burst = Burst(1, 1000, 0.1, 0.3, 0.1, 2.1, [1000.0])
    assert burst.relay_rate == pytest.approx(5000)
    assert burst.consumer_rate == pytest.approx(500)
    assert burst.end_to_end_rate == pytest.approx(1000 / 2.1)
    assert math.isnan(Burst(1, 10, 0.0, 0.0, 0.0, 0.0).relay_rate)


def test_foreign_work_is_the_busy_share_less_the_runs_own_cpu() -> None:
    # 2 CPUs for 10 s: 20 CPU seconds. 70 % busy, the run used 12 of them (60 %).
    assert foreign_share(0.7, 12.0, 10.0, 2) == pytest.approx(0.1)
    # Rounding between /proc/stat and per-process counts never makes it negative.
    assert foreign_share(0.5, 12.0, 10.0, 2) == 0.0
    assert math.isnan(foreign_share(math.nan, 1.0, 10.0, 2))
    assert math.isnan(foreign_share(0.5, 1.0, 0.0, 2))


def test_machine_jiffies_leave_interrupts_out_of_busy() -> None:
    #        user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 5 40 800 20 3 30 2 0 0\ncpu0 50 2 20 400 10 1 15 1 0 0\n"
    assert machine_jiffies(stat) == (100 + 5 + 40 + 2, 1000)


def _report() -> Report:
    report = Report([("date", "2025-01-01 12:00 UTC"), ("command", "python -m bench.events")])
    report.rounds, report.duration, report.concurrency = 2, 4.0, 8
    report.bursts.append(Burst(1, 1000, 0.1, 0.3, 0.1, 2.1, [1000.0]))
    effect = LatencyHistogram()
    for microseconds in (5000, 7000, 9000):
        effect.record(microseconds)
    report.lags.append(
        Lag(50, 50, 3, effect, effect, {0.01: 3.0, math.inf: 3.0}, 2.0, 4.0, 1.0, {}, 0.02)
    )
    for rate_on, rate_off in ((400, 800), (600, 1000)):
        report.measurements.append(
            Measurement("DeleteCast", "on", rate_on, 900, 1200, 10, {}, rate_on / 10_000)
        )
        report.measurements.append(
            Measurement("DeleteCast", "off", rate_off, 400, 200, math.nan, {})
        )
    return report


def test_the_report_takes_medians_and_their_ratio() -> None:
    report = _report()
    assert report.median("DeleteCast", "on") == 500
    assert report.median("DeleteCast", "off") == 900
    assert math.isnan(report.median("PayOrder", "on"))
    assert report.most_foreign("DeleteCast") == pytest.approx(0.06)
    assert math.isnan(report.most_foreign("PayOrder"))
    text = markdown(report)
    assert text.startswith(BEGIN) and text.endswith(END)
    assert "| DeleteCast | CastDeleted | 900/s | 500/s | 0.56 |" in text
    assert "| PayOrder | OrderPaid | -/s | -/s | - |" in text
    assert "<svg" in svg(report)


def test_the_section_replaces_only_what_lies_between_the_markers(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nprose\n\n{BEGIN}\nold\n{END}\n\nmore prose\n")
    assert write_section(page, f"{BEGIN}\nnew\n{END}")
    assert page.read_text() == f"# Benchmarks\n\nprose\n\n{BEGIN}\nnew\n{END}\n\nmore prose\n"
    bare = tmp_path / "other.md"
    bare.write_text("no markers\n")
    assert not write_section(bare, f"{BEGIN}\nnew\n{END}")
    assert bare.read_text() == "no markers\n"
