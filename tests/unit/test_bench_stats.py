"""The load generator's arithmetic: histogram buckets, percentiles, merging, targets."""

from __future__ import annotations

import math
import random

import pytest

from bench.loadgen import LoadPlan
from bench.stats import (
    LatencyHistogram,
    bucket_bounds,
    bucket_index,
    cpu_microseconds_per_call,
    merge_counters,
    merge_histograms,
    ratio,
)
from bench.target import TargetError, check_database_url, parse_target


def test_every_value_lies_within_its_bucket_and_buckets_are_contiguous() -> None:
    previous_high = -1
    for index in range(bucket_index(10_000_000) + 1):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1
        assert bucket_index(low) == index
        assert bucket_index(high) == index
        previous_high = high


def test_bucket_width_stays_within_one_sixty_fourth_of_the_value() -> None:
    for value in (127, 128, 1000, 65_432, 1_234_567, 98_765_432):
        low, high = bucket_bounds(bucket_index(value))
        assert low <= value <= high
        assert (high - low + 1) / low <= 1 / 64


def test_percentiles_are_within_one_percent_of_the_exact_ones() -> None:
    generator = random.Random(6)
    values = [int(generator.lognormvariate(7.5, 0.8)) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    ordered = sorted(values)
    for percent in (50.0, 90.0, 95.0, 99.0, 99.9):
        exact = ordered[math.ceil(percent / 100 * len(ordered)) - 1]
        assert histogram.percentile(percent) == pytest.approx(exact, rel=0.01)
    assert histogram.percentile(0) == min(values)
    assert histogram.percentile(100) == max(values)
    assert histogram.total == len(values)
    assert histogram.mean == pytest.approx(sum(values) / len(values))


def test_small_values_are_exact() -> None:
    histogram = LatencyHistogram()
    for value in (1, 2, 3, 4):
        histogram.record(value)
    assert histogram.percentile(50) == 2
    assert histogram.percentile(75) == 3


def test_merging_equals_recording_everything_in_one() -> None:
    generator = random.Random(7)
    parts = [LatencyHistogram() for _ in range(3)]
    whole = LatencyHistogram()
    for _ in range(5000):
        value = generator.randrange(0, 200_000)
        parts[generator.randrange(3)].record(value)
        whole.record(value)
    merged = merge_histograms(parts)
    assert merged == whole


def test_empty_histogram_answers_nan_and_merges_as_nothing() -> None:
    empty = LatencyHistogram()
    assert math.isnan(empty.percentile(99))
    assert math.isnan(empty.mean)
    one = LatencyHistogram()
    one.record_seconds(0.0015)
    merged = merge_histograms([empty, one])
    assert merged.total == 1
    assert merged.minimum == merged.maximum == 1500


def test_negative_latency_from_clock_jitter_counts_as_zero() -> None:
    histogram = LatencyHistogram()
    histogram.record(-5)
    assert histogram.minimum == 0
    assert histogram.percentile(50) == 0


def test_percentile_outside_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        LatencyHistogram().percentile(101)


def test_status_counts_add_up_across_workers() -> None:
    merged = merge_counters([{"OK": 10, "grpc:UNAVAILABLE": 1}, {"OK": 5, "http:503": 2}])
    assert merged == {"OK": 15, "grpc:UNAVAILABLE": 1, "http:503": 2}


def test_ratios_and_cpu_per_call() -> None:
    assert ratio(1, 4) == 0.25
    assert math.isnan(ratio(1, 0))
    assert cpu_microseconds_per_call(0.5, 1000) == 500.0
    assert math.isnan(cpu_microseconds_per_call(1.0, 0))


def test_load_is_split_over_processes_without_losing_callers() -> None:
    plan = LoadPlan(concurrency=7, processes=3)
    assert [plan.callers(w) for w in range(3)] == [3, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "open", "rate": 0}, "rate"),
        ({"concurrency": 0}, "concurrency"),
        ({"duration": 0}, "duration"),
        ({"duration": 601}, "duration"),
        ({"processes": 0}, "processes"),
    ],
)
def test_unbounded_or_empty_plans_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadPlan(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("127.1.2.3:1", "127.1.2.3", 1),
        ("localhost:50051", "localhost", 50051),
        ("[::1]:9000", "::1", 9000),
        ("http://127.0.0.1:8080/", "127.0.0.1", 8080),
    ],
)
def test_loopback_targets_are_accepted(text: str, host: str, port: int) -> None:
    target = parse_target(text)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1:80", "192.168.1.2:8080", "8.8.8.8:53", "example.com:80", "0.0.0.0:8080", "[::]:80"],
)
def test_other_targets_are_refused(text: str) -> None:
    with pytest.raises(TargetError, match="loopback only"):
        parse_target(text)


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:http", "[::1:80"])
def test_malformed_targets_are_refused(text: str) -> None:
    with pytest.raises(TargetError):
        parse_target(text)


def test_database_urls_must_be_local() -> None:
    local = "postgresql+psycopg2://postgres@127.0.0.1:5432/x"
    assert check_database_url(local) == local
    assert check_database_url("sqlite:////tmp/movie.db") == "sqlite:////tmp/movie.db"
    with pytest.raises(TargetError):
        check_database_url("postgresql+psycopg2://postgres@db.example.com/x")


def test_profile_summary_counts_self_and_inclusive_shares() -> None:
    from bench.profile import summarise

    loop = "BaseEventLoop.run_forever (asyncio/base_events.py:607)"
    worker = "Thread._bootstrap (threading.py:1002)"
    raw = [
        f"{loop};serve (a.py:2);handle (a.py:3) 6\n",
        f"{loop};serve (a.py:2);encode (b.py:9) 3\n",
        f"{worker};query (c.py:4) 1\n",
        "garbage line\n",
    ]
    summary = summarise(raw, top=5)
    assert summary.samples == 10
    assert [(f.frame, f.share) for f in summary.self_time] == [
        ("handle (a.py:3)", 0.6),
        ("encode (b.py:9)", 0.3),
        ("query (c.py:4)", 0.1),
    ]
    inclusive = {f.frame: f.share for f in summary.inclusive}
    assert loop not in inclusive  # plumbing at the bottom of every stack says nothing
    assert inclusive["serve (a.py:2)"] == 0.9
    assert (summary.event_loop, summary.worker_threads) == (0.9, 0.1)
