"""Latency histograms and the arithmetic of a load run: pure code, no I/O.

:class:`LatencyHistogram` is a log-linear histogram in the spirit of HdrHistogram: values
(microseconds, integers) below 128 get a bucket each, larger ones share a bucket with
neighbours within 1/64 of their value, so any percentile read from it is within 0.8 % of
the exact one. It is sparse (a dict of bucket counts), cheap to record into (a few integer
operations per call, which matters at thousands of calls per second in a Python load
generator) and merges exactly, which is how the results of several load-generator
processes become one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Values below this get a bucket of their own.
_LINEAR_LIMIT = 128
#: Each power-of-two range above the linear part is split into this many buckets.
_SUB_BUCKETS = 64
#: log2(_SUB_BUCKETS) + 1: a value is shifted until it is below 2 * _SUB_BUCKETS.
_SUB_BITS = 7


def bucket_index(value: int) -> int:
    """The bucket of a non-negative integer ``value``."""
    if value < _LINEAR_LIMIT:
        return max(value, 0)
    shift = value.bit_length() - _SUB_BITS
    return _LINEAR_LIMIT + (shift - 1) * _SUB_BUCKETS + ((value >> shift) - _SUB_BUCKETS)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value that fall into bucket ``index``."""
    if index < _LINEAR_LIMIT:
        return index, index
    shift = (index - _LINEAR_LIMIT) // _SUB_BUCKETS + 1
    mantissa = (index - _LINEAR_LIMIT) % _SUB_BUCKETS + _SUB_BUCKETS
    low = mantissa << shift
    return low, low + (1 << shift) - 1


@dataclass
class LatencyHistogram:
    """Counts of latencies in microseconds, mergeable across processes."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    minimum: int | None = None
    maximum: int = 0
    sum_us: int = 0

    def record(self, microseconds: int) -> None:
        """Count one latency (negative values, from clock jitter, count as 0)."""
        value = max(microseconds, 0)
        index = bucket_index(value)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        self.sum_us += value
        if value > self.maximum:
            self.maximum = value
        if self.minimum is None or value < self.minimum:
            self.minimum = value

    def record_seconds(self, seconds: float) -> None:
        """Count one latency given in seconds."""
        self.record(round(seconds * 1_000_000))

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this histogram."""
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total
        self.sum_us += other.sum_us
        self.maximum = max(self.maximum, other.maximum)
        if other.minimum is not None:
            self.minimum = (
                other.minimum if self.minimum is None else min(self.minimum, other.minimum)
            )

    def percentile(self, percent: float) -> float:
        """The latency (microseconds) below or at which ``percent`` % of the values lie.

        The answer is the midpoint of the bucket holding that rank, clamped to the exact
        minimum and maximum, so p0 and p100 are exact. An empty histogram answers NaN.
        """
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"percentile must be within 0..100, got {percent}")
        if self.total == 0:
            return math.nan
        rank = max(1, math.ceil(percent / 100.0 * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, high = bucket_bounds(index)
                middle = (low + high) / 2
                assert self.minimum is not None
                return float(min(max(middle, self.minimum), self.maximum))
        return float(self.maximum)  # pragma: no cover - ranks never exceed the total

    @property
    def mean(self) -> float:
        """Mean latency in microseconds (NaN when empty)."""
        return self.sum_us / self.total if self.total else math.nan


def merge_histograms(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    """One histogram holding every value of ``histograms``."""
    merged = LatencyHistogram()
    for histogram in histograms:
        merged.merge(histogram)
    return merged


def merge_counters(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sum of status counts, keys sorted for stable output."""
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(sorted(total.items()))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


def cpu_microseconds_per_call(cpu_seconds: float, calls: int) -> float:
    """CPU time spent per completed call, in microseconds (NaN for no calls)."""
    return cpu_seconds * 1_000_000 / calls if calls > 0 else math.nan
