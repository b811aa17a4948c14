"""How a load result is printed: a short text block, or a dict for JSON and the docs."""

from __future__ import annotations

import math
import os
from typing import Any

from bench.loadgen import LoadResult
from bench.stats import cpu_microseconds_per_call


def _ms(microseconds: float) -> str:
    return "-" if math.isnan(microseconds) else f"{microseconds / 1000:.2f}"


def summary(result: LoadResult) -> dict[str, Any]:
    """The figures of one run, JSON-ready (latencies in milliseconds)."""
    plan = result.plan
    latency = result.latency
    calls = result.ok
    return {
        "scenario": result.scenario,
        "mode": plan.mode,
        "concurrency": plan.concurrency if plan.mode == "closed" else None,
        "rate": plan.rate if plan.mode == "open" else None,
        "processes": plan.processes,
        "duration_s": plan.duration,
        "warmup_s": plan.warmup,
        "throughput": round(result.throughput, 1),
        "ok": calls,
        "failed": result.failed,
        "p50_ms": round(latency.percentile(50) / 1000, 3) if latency.total else None,
        "p95_ms": round(latency.percentile(95) / 1000, 3) if latency.total else None,
        "p99_ms": round(latency.percentile(99) / 1000, 3) if latency.total else None,
        "max_ms": round(latency.maximum / 1000, 3) if latency.total else None,
        "send_lag_p99_ms": (
            round(result.send_lag.percentile(99) / 1000, 3) if result.send_lag.total else None
        ),
        "client_cpu_us_per_call": _round(
            cpu_microseconds_per_call(result.client_cpu_seconds, calls)
        ),
        "process_cpu_us_per_call": {
            name: _round(cpu_microseconds_per_call(seconds, calls))
            for name, seconds in sorted(result.process_cpu_seconds.items())
        },
        "process_cores": {
            name: round(seconds / result.window, 2)
            for name, seconds in sorted(result.process_cpu_seconds.items())
        },
        "client_cores": round(result.client_cpu_seconds / result.window, 2),
        "machine_busy": None if math.isnan(result.machine_busy) else round(result.machine_busy, 3),
        "other_cores": _round2(other_cores(result)),
        "probes_per_second": {
            name: round(delta / result.window, 1) for name, delta in result.probes.items()
        },
    }


def other_cores(result: LoadResult) -> float:
    """Cores busy with processes neither watched nor generating load (noise on the box)."""
    if math.isnan(result.machine_busy):
        return math.nan
    busy = result.machine_busy * (os.cpu_count() or 1)
    known = result.client_cpu_seconds + sum(result.process_cpu_seconds.values())
    return max(0.0, busy - known / result.window)


def _round2(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


def text(result: LoadResult) -> str:
    """A human-readable block for one run."""
    plan = result.plan
    load = (
        f"closed loop, {plan.concurrency} concurrent"
        if plan.mode == "closed"
        else f"open loop, {plan.rate:g} calls/s intended"
    )
    latency = result.latency
    lines = [
        f"{result.scenario}: {load}, {plan.processes} generator processes, "
        f"{plan.duration:g}s measured after {plan.warmup:g}s warm-up",
        f"  throughput  {result.throughput:,.0f} calls/s ({result.ok} ok)",
        f"  latency ms  p50 {_ms(latency.percentile(50))}  p95 {_ms(latency.percentile(95))}"
        f"  p99 {_ms(latency.percentile(99))}  max {_ms(float(latency.maximum))}",
    ]
    failed = result.failed
    lines.append(
        "  failed      "
        + (", ".join(f"{name}: {count}" for name, count in failed.items()) if failed else "none")
    )
    if plan.mode == "open" and result.send_lag.total:
        lines.append(
            f"  send lag ms p50 {_ms(result.send_lag.percentile(50))}  "
            f"p99 {_ms(result.send_lag.percentile(99))} (generator lateness, included above)"
        )
    cpu = [f"load generator {result.client_cpu_seconds / result.window:.2f}"]
    cpu += [
        f"{name} {seconds / result.window:.2f}"
        for name, seconds in sorted(result.process_cpu_seconds.items())
    ]
    lines.append("  cores used  " + ", ".join(cpu))
    for name, delta in result.probes.items():
        lines.append(f"  {name:<11} {delta / result.window:,.1f}/s")
    if not math.isnan(result.machine_busy):
        lines.append(
            f"  machine     {result.machine_busy:.0%} of all CPUs busy; "
            f"{other_cores(result):.2f} cores used by other processes"
        )
    return "\n".join(lines)
