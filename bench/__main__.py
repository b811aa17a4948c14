"""``python -m bench``: load scenarios against a running Cinema, and the full suite.

* ``python -m bench run SCENARIO --target 127.0.0.1:PORT [...]``: one scenario against a
  running system (a replica for direct gRPC, Envoy for everything else); prints
  throughput, p50/p95/p99 and failed calls by status.
* ``python -m bench suite [--quick]``: starts everything itself (PostgreSQL databases,
  ``cinema up``, the echo stub and its Envoy), runs every scenario and ceiling, prints the
  table of ratios and writes ``docs/benchmarks.md``.

Only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

import grpc

from bench import fixtures, report, scenarios
from bench.loadgen import LoadError, LoadPlan, Scenario, run_load
from bench.target import TargetError, parse_target

SCENARIOS = (
    "get-movie-grpc",
    "get-movie-json",
    "list-movies-grpc",
    "list-movies-json",
    "create-movie-json",
    "buy-json",
    "db-get-movie",
    "usecase-get-movie",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load scenarios against a running Cinema, and the full benchmark suite.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one scenario against a running system")
    run.add_argument("scenario", choices=SCENARIOS)
    run.add_argument(
        "--target", help="HOST:PORT on loopback: a replica (gRPC) or Envoy (gRPC or JSON)"
    )
    run.add_argument("--mode", choices=("closed", "open"), default="closed")
    run.add_argument("--concurrency", type=int, default=32, help="closed loop: callers")
    run.add_argument("--rate", type=float, default=0.0, help="open loop: calls per second")
    run.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    run.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    run.add_argument("--processes", type=int, default=2, help="load-generator processes")
    run.add_argument("--connections", type=int, default=2, help="gRPC connections/process")
    run.add_argument("--timeout", type=float, default=5.0, help="deadline of each call")
    run.add_argument("--ids", type=int, default=1000, help="movie ids to spread calls over")
    run.add_argument(
        "--catalogue",
        help="gRPC HOST:PORT to list movie ids from (default: --target for gRPC scenarios)",
    )
    run.add_argument("--database-url", help="db-/usecase- scenarios: the movie database")
    run.add_argument("--token", help="access token (admin for create, user for buy)")
    run.add_argument(
        "--key-dir",
        type=pathlib.Path,
        help="create-movie-json: mint an admin token with this system's keys (DATA_DIR/keys)",
    )
    run.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="measure the CPU of this process too (repeatable)",
    )
    run.add_argument(
        "--state",
        type=pathlib.Path,
        metavar="DATA_DIR/state.json",
        help="measure the CPU of every process a `cinema up` started (its state file)",
    )
    run.add_argument("--json", action="store_true", help="print the result as JSON")

    suite = commands.add_parser("suite", help="start everything, run all, write the docs")
    suite.add_argument("--quick", action="store_true", help="short runs, 1k movies only")
    suite.add_argument(
        "--output",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md",
        help="where to write the report (default docs/benchmarks.md)",
    )
    suite.add_argument("--no-write", action="store_true", help="print only, write nothing")
    suite.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy profile runs after the measured ones (default: on unless --quick)",
    )
    suite.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="a loopback PostgreSQL server URL with rights to create databases",
    )
    suite.add_argument("--work-dir", type=pathlib.Path, help="keep logs here (default: temp)")
    return parser


def _movie_ids(args: argparse.Namespace, default_catalogue: str | None) -> tuple[str, ...]:
    source = args.catalogue or default_catalogue
    if source is None:
        raise SystemExit("--catalogue HOST:PORT (a gRPC endpoint) is needed to find movie ids")
    ids = scenarios.run_async(scenarios.list_movie_ids(parse_target(source), args.ids))
    if not ids:
        raise SystemExit(f"no movies found at {source}")
    return tuple(ids)


def build_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario the ``run`` arguments describe (fixtures fetched from the system)."""
    name = args.scenario
    if name in ("db-get-movie", "usecase-get-movie"):
        if not args.database_url:
            raise SystemExit(f"{name} needs --database-url")
        ids = _movie_ids(args, args.target)
        if name == "db-get-movie":
            return scenarios.DbGetMovie(args.database_url, ids)
        return scenarios.UseCaseGetMovie(args.database_url, ids)
    if not args.target:
        raise SystemExit(f"{name} needs --target HOST:PORT")
    target = parse_target(args.target)
    grpc_default = args.target if name.endswith("-grpc") else None
    if name == "get-movie-grpc":
        return scenarios.GetMovieGrpc(
            target, _movie_ids(args, grpc_default), args.connections, args.timeout
        )
    if name == "list-movies-grpc":
        return scenarios.ListMoviesGrpc(target, connections=args.connections, timeout=args.timeout)
    if name == "get-movie-json":
        # Envoy speaks gRPC on the same port: list ids through it unless told otherwise.
        return scenarios.GetMovieJson(target, _movie_ids(args, args.target), args.timeout)
    if name == "list-movies-json":
        return scenarios.ListMoviesJson(target, timeout=args.timeout)
    if name == "create-movie-json":
        token = args.token or (fixtures.mint_admin_token(args.key_dir) if args.key_dir else None)
        if token is None:
            raise SystemExit("create-movie-json needs --token (an admin's) or --key-dir")
        return scenarios.CreateMovieJson(
            target, token, fixtures.ensure_casts(target, token), args.timeout
        )
    if name == "buy-json":
        if args.token is None and args.key_dir is None:
            raise SystemExit("buy-json needs --token (a user's) or --key-dir (to make one)")
        token = args.token
        if token is None:
            token = fixtures.register_user(target, fixtures.mint_admin_token(args.key_dir))[1]
        return scenarios.BuyJson(target, token, _movie_ids(args, args.target), args.timeout)
    raise SystemExit(f"unknown scenario {name}")  # pragma: no cover - argparse checks


def _watch(values: Sequence[str]) -> dict[str, list[int]]:
    watched: dict[str, list[int]] = {}
    for value in values:
        name, sep, pid = value.partition("=")
        if not sep or not pid.isdigit():
            raise SystemExit(f"--watch takes NAME=PID, got {value!r}")
        watched.setdefault(name, []).append(int(pid))
    return watched


def _state_pids(path: pathlib.Path) -> dict[str, list[int]]:
    """Pids of a ``cinema up`` state file, grouped by service (``movie-2`` -> ``movie``)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"cannot read {path}: {error}") from None
    grouped: dict[str, list[int]] = {}
    if state.get("launcher_pid"):
        grouped["launcher"] = [int(state["launcher_pid"])]
    for entry in state.get("processes", []):
        if entry.get("pid"):
            grouped.setdefault(str(entry["name"]).split("-")[0], []).append(int(entry["pid"]))
    return grouped


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            plan = LoadPlan(
                mode=args.mode,
                concurrency=args.concurrency,
                rate=args.rate,
                duration=args.duration,
                warmup=args.warmup,
                processes=args.processes,
                timeout=args.timeout,
            )
            scenario = build_scenario(args)
            watched = _watch(args.watch)
            if args.state is not None:
                for name, pids in _state_pids(args.state).items():
                    watched.setdefault(name, []).extend(pids)
            result = run_load(scenario, plan, watch=lambda: watched)
            if args.json:
                print(json.dumps(report.summary(result), indent=2))
            else:
                print(report.text(result))
            return 1 if result.ok == 0 else 0
        from bench import suite

        return suite.main(args)
    except (TargetError, ValueError, LoadError, fixtures.FixtureError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except (scenarios.ScenarioError, OSError, grpc.RpcError) as error:
        # The target did not answer as a Cinema system would: say so in one line.
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        print(f"bench: the target did not answer: {detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
