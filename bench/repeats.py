"""What recording a call costs a write: ``python -m bench.repeats [--quick] [--no-write]``.

Updates, deletes, CancelOrder, Logout and RevokeSession store the gateway's call id in
``handled_calls`` in their own transaction (services/common/handled_calls.py): one
primary-key SELECT and one INSERT more per call that comes through Envoy. This run measures
that on UpdateMovie (a new price each call), on loopback only, and stops by itself:

* a fresh PostgreSQL database and one ``cinema serve movie`` on it, events off (the outbox
  is measured by ``bench.events``), called directly on its port;
* two variants, interleaved in ``--rounds`` rounds (the order alternating): calls without
  ``x-cinema-call-id`` (a direct client: nothing recorded), and calls with a new one each
  (as through Envoy: every call recorded);
* closed loop, ``--concurrency`` callers in 2 load-generator processes, the suite's load
  generator; the figures are the median calls/s of the rounds, their ratio, p50 and p99
  latency, and the movie process's CPU per call.

Writes ``docs/repeats-cost.svg`` and the table between the ``bench-repeats`` markers of
``docs/benchmarks.md`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import pathlib
import statistics
import tempfile
from dataclasses import dataclass

from bench import fixtures, procfs
from bench.events import (
    MACHINE_PROBES,
    NewPrices,
    _facts,
    _foreign,
    postgres_helpers,
)
from bench.loadgen import LoadPlan, LoadResult, run_load
from bench.processes import postgres_databases, start_cinema_serve
from bench.seed import seed_movies
from bench.target import Target
from services.common import keyring

VARIANTS = ("no call id", "call id")
BEGIN = "<!-- bench-repeats:begin -->"
END = "<!-- bench-repeats:end -->"
ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Round:
    variant: str
    calls_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    postgres_us: float
    failed: dict[str, int]
    foreign: float


def _round(result: LoadResult, variant: str) -> Round:
    def per_call(name: str) -> float:
        seconds = result.process_cpu_seconds.get(name, float("nan"))
        return seconds * 1e6 / result.ok if result.ok else float("nan")

    return Round(
        variant,
        result.throughput,
        result.latency.percentile(50) / 1000,
        result.latency.percentile(99) / 1000,
        per_call("movie"),
        per_call("postgres"),
        result.failed,
        _foreign(result),
    )


def measure(rounds: int, duration: float, concurrency: int) -> list[Round]:
    measured: list[Round] = []
    with contextlib.ExitStack() as stack:
        work = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="repeats-")))
        databases, urls = stack.enter_context(postgres_databases(["movie"]))
        keys = work / "keys"
        keyring.ensure_ring(keys)
        token = fixtures.mint_admin_token(keys)
        _, public_key = keyring.signing_files(keys)
        env = {
            "DATABASE_URL": urls["movie"],
            "CINEMA_JWT_PUBLIC_KEY_FILE": str(public_key),
            "CINEMA_DATA_DIR": str(work / "data"),
            "CAST_SERVICE_ADDR": "127.0.0.1:1",  # a price update asks no cast
        }
        movie = start_cinema_serve("movie", env, work / "logs")
        stack.callback(movie.stop, 10)
        movie_ids = tuple(seed_movies(urls["movie"], 2000, ()))
        target = Target("127.0.0.1", movie.port)
        plan = LoadPlan(concurrency=concurrency, duration=duration, warmup=1.0, processes=2)
        for number in range(rounds):
            order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                scenario = NewPrices(target, movie_ids, token, 2, call_ids=variant == "call id")
                result = run_load(
                    scenario,
                    plan,
                    watch=lambda: {
                        "movie": [movie.pid],
                        "postgres": procfs.postgres_backends(databases.prefix) + postgres_helpers(),
                    },
                    probes=MACHINE_PROBES,
                )
                measured.append(_round(result, variant))
                print(f"round {number + 1} {variant}: {measured[-1]}")
    return measured


def _median(rounds: list[Round], variant: str, pick: str) -> float:
    return float(statistics.median(getattr(r, pick) for r in rounds if r.variant == variant))


def table(rounds: list[Round], command: str) -> str:
    lines = [BEGIN, "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in _facts(command)]
    lines += [
        "",
        "UpdateMovie (a new price each call) on PostgreSQL, events off, called directly; "
        "median of the rounds.",
        "",
        "| variant | calls/s | ratio | p50 ms | p99 ms | CPU per call: movie | PostgreSQL | "
        "each round (calls/s) | failed | other work, most |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    base = _median(rounds, VARIANTS[0], "calls_per_second")
    for variant in VARIANTS:
        mine = [r for r in rounds if r.variant == variant]
        rate = _median(rounds, variant, "calls_per_second")
        failed = sum(sum(r.failed.values()) for r in mine)
        lines.append(
            f"| {variant} | {rate:,.0f} | {rate / base:.2f} | "
            f"{_median(rounds, variant, 'p50_ms'):.1f} | "
            f"{_median(rounds, variant, 'p99_ms'):.1f} | "
            f"{_median(rounds, variant, 'cpu_us'):,.0f} µs | "
            f"{_median(rounds, variant, 'postgres_us'):,.0f} µs | "
            f"{', '.join(f'{r.calls_per_second:,.0f}' for r in mine)} | {failed or 'none'} | "
            f"{max(r.foreign for r in mine):.0%} |"
        )
    return "\n".join([*lines, "", END])


def chart(rounds: list[Round]) -> str:
    """Median calls/s of each variant as two bars."""
    rates = {v: _median(rounds, v, "calls_per_second") for v in VARIANTS}
    top = max(rates.values()) * 1.15
    width, height, bar = 520, 220, 120
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="16" y="22" font-size="15">UpdateMovie calls/s: recording the call id</text>',
    ]
    for number, (variant, rate) in enumerate(rates.items()):
        x = 80 + number * (bar + 100)
        h = (height - 80) * rate / top
        y = height - 40 - h
        fill = "#8da0cb" if number == 0 else "#fc8d62"
        parts += [
            f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" fill="{fill}"/>',
            f'<text x="{x + bar / 2}" y="{y - 6:.1f}" text-anchor="middle">{rate:,.0f}/s</text>',
            f'<text x="{x + bar / 2}" y="{height - 20}" text-anchor="middle">'
            f"{html.escape(variant)}</text>",
        ]
    return "\n".join([*parts, "</svg>", ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.repeats", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="only print")
    args = parser.parse_args(argv)
    rounds, duration = (2, 2.0) if args.quick else (args.rounds, args.duration)
    measured = measure(rounds, duration, args.concurrency)
    command = "python -m bench.repeats" + (" --quick" if args.quick else "")
    text = table(measured, command)
    print(text)
    if args.no_write:
        return
    (ROOT / "docs" / "repeats-cost.svg").write_text(chart(measured))
    document = ROOT / "docs" / "benchmarks.md"
    current = document.read_text()
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    document.write_text(head + text + tail)
    print("wrote docs/repeats-cost.svg and docs/benchmarks.md")


if __name__ == "__main__":
    main()
