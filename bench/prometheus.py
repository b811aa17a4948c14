"""Reading a service's ``/metrics`` page: counters and histogram quantiles, pure code.

A benchmark scrapes ``/metrics`` before and after a phase; the change of a counter, and
the change of a histogram's buckets, is what the phase did. A quantile is read from the
changed buckets the way PromQL's ``histogram_quantile`` reads it: find the bucket that
holds the rank, then interpolate linearly inside it (the lowest bucket starts at 0; a rank
in the ``+Inf`` bucket answers the largest finite bound). So a quantile is only as precise
as the buckets around it, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

#: Cumulative bucket counts of a histogram: upper bound (``le``) -> observations <= it.
Buckets = dict[float, float]


@dataclass(frozen=True)
class Sample:
    """One line of an exposition: a sample name, its labels and its value."""

    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition."""
    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _matches(sample: Sample, name: str, labels: Mapping[str, str]) -> bool:
    return sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())


def total(samples: Sequence[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(s.value for s in samples if _matches(s, name, labels))


def buckets(samples: Sequence[Sample], histogram: str, **labels: str) -> Buckets:
    """The cumulative buckets of ``histogram`` (its ``_bucket`` samples), summed over every
    series whose labels include ``labels``."""
    out: Buckets = {}
    for sample in samples:
        if _matches(sample, f"{histogram}_bucket", labels) and "le" in sample.labels:
            bound = float(sample.labels["le"])  # "+Inf" parses as inf
            out[bound] = out.get(bound, 0.0) + sample.value
    return dict(sorted(out.items()))


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> Buckets:
    """What was observed between two scrapes (bounds missing before count from 0)."""
    return {bound: count - before.get(bound, 0.0) for bound, count in sorted(after.items())}


def observations(histogram: Mapping[float, float]) -> float:
    """How many observations cumulative ``histogram`` holds (its largest bucket)."""
    return max(histogram.values(), default=0.0)


def quantile(q: float, histogram: Mapping[float, float]) -> float:
    """The ``q``-quantile (0..1) of cumulative ``histogram``, as ``histogram_quantile``.

    NaN when the histogram is empty or has no ``+Inf`` bucket.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    ordered = sorted(histogram.items())
    if not ordered or not math.isinf(ordered[-1][0]):
        return math.nan
    count = ordered[-1][1]
    if count <= 0:
        return math.nan
    rank = q * count
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(bound):
                # Above every finite bound: the largest one is all a histogram can say.
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower  # pragma: no cover - the +Inf bucket holds every rank
