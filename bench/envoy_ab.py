"""The gateway A/B: Envoy variants in front of the echo stub, measured in alternation.

``python -m bench.envoy_ab [VARIANT ...]`` starts the echo stub (:mod:`bench.stub`, one or
more replicas), one Envoy per variant, each rendered by :func:`gateway.envoy_config.render`
with every cluster pointing at the stub(s), and runs GetMovie through each Envoy in turn,
round after round, each variant taking each place in the order in turn (A B C, B C A,
C A B, ...), so the machine's other load falls on every variant alike. It prints one line
per run and then, per scenario and variant, the medians over the rounds.

A variant is ``current`` (the gateway as configured: :data:`~gateway.envoy_config.BALANCING`
and :func:`~gateway.envoy_config.command_line_flags`) or changes to it joined with ``+``:

* ``workers=N``: ``--concurrency N``; ``workers=auto`` passes none (Envoy's default, one
  worker per CPU);
* ``balancing=POLICY``: every service balanced with POLICY (ROUND_ROBIN, RANDOM,
  LEAST_REQUEST);
* ``access-log=off``: no access log, to price it;
* ``upstream-streams=N``: at most N calls per HTTP/2 connection to a replica, so Envoy
  opens more connections to each replica under load.

``workers=auto+balancing=ROUND_ROBIN`` is the gateway before Envoy got ``--concurrency 1``
and least-request balancing. Examples::

    python -m bench.envoy_ab workers=auto+balancing=ROUND_ROBIN current --rounds 6
    python -m bench.envoy_ab balancing=ROUND_ROBIN balancing=LEAST_REQUEST balancing=RANDOM \\
        --replicas 2 --scenarios grpc
    python -m bench.envoy_ab balancing=ROUND_ROBIN balancing=LEAST_REQUEST --replicas 2 \\
        --slow-replica 10 --scenarios grpc

Envoy's CPU per call is the figure to compare: throughput and latency move with whatever
else the machine runs. ``vs first`` is the median over rounds of a run's Envoy CPU per call
over the first variant's in the same round. ``vs first, per stub µs`` divides each by the
stub's CPU per call in the same run first: contention slows both processes alike, so it is
steadier, but only fair for variants that do not change what the stub does (the worker
count does: fewer upstream connections batch the stub's work too). With several replicas,
``share`` is each replica's part of the calls, from Envoy's ``rq_total`` per host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bench import processes, scenarios
from bench.loadgen import LoadPlan, LoadResult, Scenario, run_load
from bench.stats import LatencyHistogram, merge_histograms
from bench.target import Target
from gateway import envoy_config

LOCAL = "127.0.0.1"
SCENARIOS = ("grpc", "json")


@dataclass(frozen=True)
class Variant:
    """One Envoy to compare: its name, how it is rendered and the flags it runs with."""

    name: str
    flags: tuple[str, ...]
    balancing: str | None = None
    access_log: bool = True
    #: HTTP/2 ``max_concurrent_streams`` towards the replicas (None: Envoy's default), so
    #: Envoy opens another connection per replica for every this many calls in flight.
    upstream_streams: int | None = None

    def render(self, topology: envoy_config.Topology) -> dict[str, Any]:
        """The bootstrap of this variant for ``topology``."""
        overrides = (
            {key: self.balancing for key in envoy_config.SERVICES} if self.balancing else None
        )
        config = envoy_config.render(topology, balancing=overrides)
        if not self.access_log:
            for listener in config["static_resources"]["listeners"]:
                for chain in listener["filter_chains"]:
                    for network_filter in chain["filters"]:
                        network_filter["typed_config"].pop("access_log", None)
        if self.upstream_streams is not None:
            for cluster in config["static_resources"]["clusters"]:
                if cluster["name"] not in envoy_config.SERVICES:
                    continue
                options = cluster["typed_extension_protocol_options"][
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                ]
                options["explicit_http_config"]["http2_protocol_options"] = {
                    "max_concurrent_streams": self.upstream_streams
                }
        return config


def parse_variant(spec: str) -> Variant:
    """A variant from its command-line spelling (see the module docstring)."""
    flags: tuple[str, ...] = tuple(envoy_config.command_line_flags())
    balancing: str | None = None
    access_log = True
    upstream_streams: int | None = None
    for part in spec.split("+"):
        key, sep, value = part.partition("=")
        if part == "current":
            continue
        if key == "workers" and sep:
            if value == "auto":
                flags = ()
            elif value.isdigit():
                flags = tuple(envoy_config.command_line_flags(int(value)))
            else:
                raise ValueError(f"{spec}: workers takes a number or auto, got {value!r}")
        elif key == "balancing" and sep:
            envoy_config.balancing_policies({"movie": value})  # refuses an unknown policy
            balancing = value.upper()
        elif part == "access-log=off":
            access_log = False
        elif key == "upstream-streams" and value.isdigit() and int(value) > 0:
            upstream_streams = int(value)
        else:
            raise ValueError(
                f"{spec}: unknown part {part!r}; use current, workers=N|auto, "
                "balancing=POLICY, access-log=off, upstream-streams=N"
            )
    return Variant(spec, flags, balancing, access_log, upstream_streams)


@dataclass
class Gateway:
    """A running Envoy of one variant."""

    variant: Variant
    child: processes.Child
    admin_port: int

    def requests_per_host(self) -> dict[int, int]:
        """port -> ``rq_total`` of each movie replica, from the admin API."""
        url = f"http://{LOCAL}:{self.admin_port}/clusters?format=json"
        with urllib.request.urlopen(url, timeout=3) as reply:
            document = json.loads(reply.read())
        counts: dict[int, int] = {}
        for cluster in document.get("cluster_statuses", []):
            if cluster.get("name") != "movie":
                continue
            for host in cluster.get("host_statuses", []):
                port = int(host["address"]["socket_address"]["port_value"])
                stats = {s.get("name"): int(s.get("value", 0)) for s in host.get("stats", [])}
                counts[port] = stats.get("rq_total", 0)
        return counts


def start_gateway(
    variant: Variant, index: int, stub_ports: Sequence[int], work_dir: pathlib.Path
) -> Gateway:
    """An Envoy of ``variant`` with the movie cluster on every stub, the rest on the first."""
    listen_port, admin_port = processes.free_port(), processes.free_port()
    first = stub_ports[0]
    topology = envoy_config.local_topology(
        {key: list(stub_ports) if key == "movie" else [first] for key in envoy_config.SERVICES},
        sidecar_grpc_port=first,
        sidecar_http_port=first,
        listen_port=listen_port,
        admin_port=admin_port,
    )
    config_path = work_dir / f"envoy-{index}.yaml"
    config_path.write_text(envoy_config.dump_yaml(variant.render(topology), comment=variant.name))
    argv = [processes.tool("envoy"), "-c", str(config_path), *variant.flags]
    argv += ["--use-dynamic-base-id", "--log-level", "warn"]
    child = processes.spawn(f"envoy-{index}", argv, work_dir / "logs" / f"envoy-{index}.log")
    child.port = listen_port
    processes.wait_http_ok(child, f"http://{LOCAL}:{admin_port}/ready", 30)
    processes.wait_for_cluster(child, admin_port, "movie", 30)
    return Gateway(variant, child, admin_port)


@dataclass
class Run:
    """One measured run of one variant."""

    round: int
    scenario: str
    variant: str
    result: LoadResult
    envoy_us: float
    stub_us: float
    share: dict[int, int] = field(default_factory=dict)

    def line(self) -> dict[str, Any]:
        """The run as a JSON-ready dict."""
        latency = self.result.latency
        return {
            "round": self.round,
            "scenario": self.scenario,
            "variant": self.variant,
            "throughput": round(self.result.throughput, 1),
            "p50_ms": round(latency.percentile(50) / 1000, 2) if latency.total else None,
            "p99_ms": round(latency.percentile(99) / 1000, 2) if latency.total else None,
            "failed": self.result.failed,
            "envoy_us_per_call": round(self.envoy_us, 1),
            "stub_us_per_call": round(self.stub_us, 1),
            "machine_busy": round(self.result.machine_busy, 2),
            "share": {str(port): calls for port, calls in self.share.items()},
        }


def measure(
    gateway: Gateway,
    stubs: Sequence[processes.Child],
    scenario_name: str,
    ids: tuple[str, ...],
    plan: LoadPlan,
    round_number: int,
) -> Run:
    """One run of ``scenario_name`` through ``gateway``."""
    target = Target(LOCAL, gateway.child.port)
    scenario: Scenario = (
        scenarios.GetMovieGrpc(target, ids)
        if scenario_name == "grpc"
        else scenarios.GetMovieJson(target, ids)
    )
    watched = {"envoy": [gateway.child.pid], "stub": [stub.pid for stub in stubs]}
    before = gateway.requests_per_host() if len(stubs) > 1 else {}
    result = run_load(scenario, plan, watch=lambda: watched)
    after = gateway.requests_per_host() if len(stubs) > 1 else {}
    calls = max(result.ok, 1)
    return Run(
        round_number,
        scenario_name,
        gateway.variant.name,
        result,
        envoy_us=result.process_cpu_seconds.get("envoy", math.nan) * 1e6 / calls,
        stub_us=result.process_cpu_seconds.get("stub", math.nan) * 1e6 / calls,
        share={port: after[port] - before.get(port, 0) for port in after},
    )


def _check_alive(children: Sequence[processes.Child]) -> None:
    for child in children:
        if child.process.poll() is not None:
            raise processes.StartError(
                f"{child.name} exited ({child.process.returncode}); its log ends:\n{child.tail()}"
            )


def renice(pid: int, niceness: int) -> None:
    """Set the niceness of every thread of ``pid`` (Linux keeps one per thread)."""
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


def _relative_to_first(
    runs: Sequence[Run], first: str, *, per_stub: bool
) -> dict[tuple[str, str], float]:
    """Median over rounds of each run's Envoy CPU per call over the first variant's in the
    same round and scenario; ``per_stub`` divides each by the stub's CPU per call first."""

    def figure(run: Run) -> float:
        return run.envoy_us / run.stub_us if per_stub else run.envoy_us

    reference = {(run.round, run.scenario): figure(run) for run in runs if run.variant == first}
    ratios: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        base = reference.get((run.round, run.scenario))
        if base:
            ratios.setdefault((run.scenario, run.variant), []).append(figure(run) / base)
    return {key: statistics.median(values) for key, values in ratios.items()}


def summary(runs: Sequence[Run], variants: Sequence[str]) -> list[str]:
    """A Markdown table: per scenario and variant, medians over the rounds."""
    relative = _relative_to_first(runs, variants[0], per_stub=False)
    per_stub = _relative_to_first(runs, variants[0], per_stub=True)
    lines = [
        "| scenario | variant | runs | Envoy µs/call (median, min-max) | vs first "
        "| vs first, per stub µs | calls/s (median) | p50 ms | p99 ms | failed "
        "| share per replica |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for scenario_name in dict.fromkeys(run.scenario for run in runs):
        for name in variants:
            mine = [r for r in runs if r.scenario == scenario_name and r.variant == name]
            if not mine:
                continue
            envoy = [r.envoy_us for r in mine]
            latency: LatencyHistogram = merge_histograms(r.result.latency for r in mine)
            failed = sum(sum(r.result.failed.values()) for r in mine)
            totals: dict[int, int] = {}
            for run in mine:
                for port, calls in run.share.items():
                    totals[port] = totals.get(port, 0) + calls
            everything = sum(totals.values())
            share = (
                " / ".join(f"{100 * calls / everything:.0f}%" for calls in totals.values())
                if everything
                else "-"
            )
            ratio = relative.get((scenario_name, name), math.nan)
            stub_ratio = per_stub.get((scenario_name, name), math.nan)
            lines.append(
                f"| {scenario_name} | {name} | {len(mine)} "
                f"| {statistics.median(envoy):,.0f} ({min(envoy):,.0f}-{max(envoy):,.0f}) "
                f"| {100 * (ratio - 1):+.0f}% | {100 * (stub_ratio - 1):+.0f}% "
                f"| {statistics.median(r.result.throughput for r in mine):,.0f} "
                f"| {latency.percentile(50) / 1000:.2f} | {latency.percentile(99) / 1000:.2f} "
                f"| {failed} | {share} |"
            )
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.envoy_ab",
        description="Envoy variants in front of the echo stub, measured in alternation.",
    )
    parser.add_argument(
        "variants",
        nargs="*",
        default=["workers=auto+balancing=ROUND_ROBIN", "current"],
        help="current, or changes joined with + (workers=N|auto, balancing=POLICY, "
        "access-log=off); the first is the reference",
    )
    parser.add_argument("--scenarios", default="grpc,json", help="grpc, json or both")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: callers")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop instead: calls/s")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--replicas", type=int, default=1, help="echo stubs behind Envoy")
    parser.add_argument(
        "--slow-replica",
        type=int,
        default=0,
        metavar="NICE",
        help="run the second replica at this niceness (1-19): a replica that gets less CPU, "
        "as one on a busier machine",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="unmeasured seconds of each scenario before its runs in a round",
    )
    parser.add_argument("--json", action="store_true", help="print each run as a JSON line")
    parser.add_argument("--work-dir", type=pathlib.Path, help="keep configs and logs here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench.envoy_ab``."""
    args = _parser().parse_args(argv)
    try:
        variants = [parse_variant(spec) for spec in args.variants]
        chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
        unknown = sorted(set(chosen) - set(SCENARIOS))
        if unknown or not chosen:
            raise ValueError(f"--scenarios takes grpc and/or json, got {args.scenarios!r}")
        if len({v.name for v in variants}) != len(variants) or not variants:
            raise ValueError("name each variant once")
        if args.replicas < 1 or (args.slow_replica and args.replicas < 2):
            raise ValueError("--replicas must be at least 1 (2 with --slow-replica)")
        if not 0 <= args.slow_replica <= 19:
            raise ValueError("--slow-replica takes a niceness of 1-19")
        plan = LoadPlan(
            mode="open" if args.rate else "closed",
            concurrency=args.concurrency,
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            processes=args.processes,
        )
    except ValueError as error:
        print(f"bench.envoy_ab: {error}", file=sys.stderr)
        return 2
    try:
        return _run(args, variants, chosen, plan)
    except processes.StartError as error:
        print(f"bench.envoy_ab: {error}", file=sys.stderr)
        return 1


def _run(
    args: argparse.Namespace, variants: Sequence[Variant], chosen: Sequence[str], plan: LoadPlan
) -> int:
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work_dir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            work_dir = args.work_dir
        stubs: list[processes.Child] = []
        for index in range(args.replicas):
            stub = processes.start_stub(work_dir / "logs")
            stack.callback(stub.stop)
            stubs.append(stub)
            if index == 1 and args.slow_replica:
                renice(stub.pid, args.slow_replica)
        ids = tuple(
            scenarios.run_async(scenarios.list_movie_ids(Target(LOCAL, stubs[0].port), 1000))
        )
        gateways = []
        for index, variant in enumerate(variants):
            gateway = start_gateway(variant, index, [s.port for s in stubs], work_dir)
            stack.callback(gateway.child.stop)
            gateways.append(gateway)
        runs: list[Run] = []
        for round_number in range(args.rounds):
            # Each variant takes each place in turn (A B C, B C A, C A B, ...).
            shift = round_number % len(gateways)
            order = gateways[shift:] + gateways[:shift]
            for scenario_name in chosen:
                if args.settle > 0:
                    # Unmeasured: the first run after a change of scenario was slower for
                    # the stub, whichever variant it was; this keeps that off the figures.
                    settle = replace(plan, duration=args.settle, warmup=0.0)
                    measure(order[0], stubs, scenario_name, ids, settle, round_number)
                for gateway in order:
                    _check_alive([gateway.child, *stubs])
                    run = measure(gateway, stubs, scenario_name, ids, plan, round_number)
                    runs.append(run)
                    line = run.line()
                    if args.json:
                        print(json.dumps(line), flush=True)
                    else:
                        print(
                            f"round {round_number} {scenario_name:4} {run.variant}: "
                            f"{line['throughput']:,.0f} calls/s, Envoy "
                            f"{line['envoy_us_per_call']:,.0f} µs/call, stub "
                            f"{line['stub_us_per_call']:,.0f}, p99 {line['p99_ms']} ms"
                            + (f", share {line['share']}" if run.share else ""),
                            flush=True,
                        )
        print()
        print("\n".join(summary(runs, [v.name for v in variants])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
