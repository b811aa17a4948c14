"""What telemetry costs GetMovie: ``python -m bench.telemetry``.

One ``cinema serve movie`` per variant, all on the same PostgreSQL database with the same
1,000 movies. Each variant is measured in pairs with the reference (``metrics`` by
default): in every round the two run back to back, the reference first every other time,
and the figure is the median of the per-pair ratios, so the machine's drift (rounds on this
2-core VM move by up to 20 %) falls on both sides of a ratio alike:

* ``bare``: no /metrics, no tracing (``CINEMA_METRICS_ADDR=off``);
* ``metrics``: the default, RED metrics per RPC (services/common/metrics.py);
* ``metrics control``: the same settings in a second process, the control: the
  ratio an identical process gets is what two processes on one machine differ by anyway;
* ``metrics + traces 0 %``, ``1 %`` and ``100 %``: OpenTelemetry's SDK exporting over OTLP to a
  loopback sink that accepts and drops every batch (parent-based ratio sampling, the
  ``OTEL_*`` variables a deployment sets), with Cinema's served-call spans
  (services/common/served_spans.py) and span encoder (services/common/otlp_spans.py);
* ``metrics + traces 100 %, stock SDK``: the same with the SDK's own spans and encoder
  (bench/stock_sdk/sitecustomize.py puts them back in that process).

GetMovie is called directly on the replica (no Envoy), closed loop, by the benchmark's
load generator; the figures are successful calls per second, the median and range of the
ratios, and the server's CPU (user + system) per call.
Only loopback is used; it stops by itself.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import html
import pathlib
import statistics
import sys
import tempfile
from collections.abc import Sequence

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench import seed
from bench.loadgen import LoadPlan, run_load
from bench.processes import postgres_databases, start_cinema_serve
from bench.scenarios import GetMovieGrpc
from bench.target import Target
from services.common.auth import ensure_keypair

VARIANTS: dict[str, dict[str, str]] = {
    "bare": {"CINEMA_METRICS_ADDR": "off"},
    "metrics": {},
    # The control: the reference's own settings in a second process. What its pairs show
    # is the bench's own bias and spread (two processes, one machine), not telemetry.
    "metrics control": {},
    # Tracing on, nothing sampled: what every call pays whether or not it is recorded.
    "metrics + traces 0 %": {"OTEL_TRACES_SAMPLER_ARG": "0"},
    "metrics + traces 1 %": {"OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "metrics + traces 100 %": {"OTEL_TRACES_SAMPLER_ARG": "1.0"},
    # The SDK's own served-call spans and span encoder instead of Cinema's.
    "metrics + traces 100 %, stock SDK": {
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "PYTHONPATH": str(pathlib.Path(__file__).with_name("stock_sdk")),
    },
}


class _DropSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP receiver that accepts every export and keeps only a count of the spans of
    each ``service.name`` (each variant's own), so a variant that stopped exporting shows."""

    def __init__(self) -> None:
        self.spans: collections.Counter[str] = collections.Counter()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes
                 if a.key == "service.name"), "",
            )  # fmt: skip
            self.spans[service] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _sink() -> tuple[grpc.Server, int, _DropSink]:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    sink = _DropSink()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, sink


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres-url", default=None, help="server URL (default: loopback)")
    parser.add_argument(
        "--reference", default="metrics", choices=list(VARIANTS), help="what each is paired with"
    )
    parser.add_argument(
        "--only", action="append", choices=list(VARIANTS), help="measure these (repeat)"
    )
    parser.add_argument("--svg", type=pathlib.Path, help="write a bar chart of the ratios here")
    args = parser.parse_args(argv)
    names = [name for name in VARIANTS if name in (args.only or VARIANTS) or name == args.reference]
    others = [name for name in names if name != args.reference]
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-telemetry-"))
    _, public_key = ensure_keypair(work / "keys")
    sink, sink_port, received = _sink()
    calls_made: collections.Counter[str] = collections.Counter()
    ratios: dict[str, list[float]] = {name: [] for name in others}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in others}
    throughput: dict[str, list[float]] = {name: [] for name in names}
    cpu_per_call: dict[str, list[float]] = {name: [] for name in names}
    with postgres_databases(["movie"], args.postgres_url) as (_, urls):
        base = {
            "DATABASE_URL": urls["movie"],
            "CINEMA_JWT_PUBLIC_KEY_FILE": str(public_key),
            "CAST_SERVICE_ADDR": "127.0.0.1:1",  # GetMovie's basic view asks no peer
        }
        children = {}
        try:
            for name in names:
                extra = VARIANTS[name]
                env = {**base, **extra}
                if "OTEL_TRACES_SAMPLER_ARG" in extra:
                    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
                    env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
                    env["OTEL_SERVICE_NAME"] = name  # the sink counts each variant's spans
                children[name] = start_cinema_serve(
                    "movie", env, work, name=name.replace(" ", "").replace("%", "pct")
                )
            ids = tuple(seed.seed_movies(urls["movie"], 1000, ()))
            plan = LoadPlan(concurrency=args.concurrency, duration=args.duration, warmup=1.0)

            def measure(name: str) -> float:
                child = children[name]
                pids: dict[str, list[int]] = {"server": [child.pid]}
                result = run_load(
                    GetMovieGrpc(Target("127.0.0.1", child.port), ids),
                    plan,
                    watch=functools.partial(dict, pids),
                )
                cpu = result.process_cpu_seconds.get("server", 0.0) / max(result.ok, 1) * 1e6
                throughput[name].append(result.throughput)
                calls_made[name] += result.ok
                cpu_per_call[name].append(cpu)
                return result.throughput

            for round_number in range(args.rounds):
                for index, name in enumerate(others):
                    # A pair back to back, the reference first every other time, so the
                    # machine's drift within a pair is small and falls on both sides alike.
                    if (round_number + index) % 2 == 0:
                        reference, variant = measure(args.reference), measure(name)
                    else:
                        variant, reference = measure(name), measure(args.reference)
                    ratios[name].append(variant / reference)
                    cpu_ratios[name].append(
                        cpu_per_call[name][-1] / cpu_per_call[args.reference][-1]
                    )
                    print(
                        f"round {round_number + 1} {name:<24} {variant:7.0f}/s"
                        f" against {reference:7.0f}/s: {variant / reference:5.2f}"
                        f"   server CPU {cpu_per_call[name][-1]:4.0f}"
                        f" vs {cpu_per_call[args.reference][-1]:4.0f} µs/call"
                    )
        finally:
            for child in children.values():
                child.stop(timeout=5)  # a traced one flushes its spans as it stops
            sink.stop(0)
    print(
        f"\nvariant                   calls/s   vs {args.reference} (median, range of"
        f" {args.rounds} pairs)   server CPU µs/call (per-pair ratio, median)"
    )
    medians: dict[str, float] = {}
    for name in names:
        calls = statistics.median(throughput[name])
        cpu = statistics.median(cpu_per_call[name])
        if name == args.reference:
            print(f"{name:<24} {calls:8.0f}   1.00{'':<27}{cpu:8.0f}")
            medians[name] = 1.0
            continue
        ratio = statistics.median(ratios[name])
        medians[name] = ratio
        spread = f"({min(ratios[name]):.2f}-{max(ratios[name]):.2f})"
        cpu_ratio = statistics.median(cpu_ratios[name])
        print(f"{name:<24} {calls:8.0f}   {ratio:4.2f} {spread:<26}{cpu:8.0f} ({cpu_ratio:.2f})")
    traced = [name for name in names if "OTEL_TRACES_SAMPLER_ARG" in VARIANTS[name]]
    for name in traced:
        # Warm-up calls are traced too, so slightly more than one span per call at 100 %.
        spans = received.spans[name]
        print(f"{name}: {spans:,} spans exported for {calls_made[name]:,} calls measured")
    if args.svg:
        subtitle = f"GetMovie direct, vs {args.reference}: median of {args.rounds} paired rounds"
        args.svg.write_text(_svg(medians, subtitle))
        print(f"wrote {args.svg}")
    return 0


def _svg(ratios: dict[str, float], subtitle: str) -> str:
    """Horizontal bars of each variant's throughput as a share of the reference's."""
    top = max(max(ratios.values()), 1.0)
    rows = []
    for index, (name, value) in enumerate(ratios.items()):
        y = 50 + index * 30
        width = 360 * value / top
        rows.append(
            f'<text x="10" y="{y + 13}" font-size="12">{html.escape(name)}</text>'
            f'<rect x="250" y="{y}" width="{width:.1f}" height="18" fill="#2f6db5"/>'
            f'<text x="{256 + width:.1f}" y="{y + 13}" font-size="12">{value:.2f}</text>'
        )
    height = 60 + 30 * len(ratios)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="740" height="{height}" '
        'font-family="sans-serif">'
        '<text x="10" y="20" font-size="14" font-weight="bold">What telemetry costs GetMovie'
        f'</text><text x="10" y="38" font-size="11">{html.escape(subtitle)}</text>'
        + "".join(rows)
        + "</svg>\n"
    )


if __name__ == "__main__":
    sys.exit(main())
