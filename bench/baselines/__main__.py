"""``python -m bench.baselines``: the baseline by hand, for one-off runs.

* ``up``: fresh PostgreSQL databases, the baseline on them (nginx and the two apps), three
  cast members, N seeded movies; writes ``WORK_DIR/state.json`` (port, pids, database
  URLs, key dir) and runs until Ctrl-C, then stops everything and drops the databases.
* ``run SCENARIO --target 127.0.0.1:PORT``: one of Cinema's JSON scenarios against it, with
  movie ids read from the movie database (``--ids-from-database URL``) instead of
  ListMovies over gRPC, which nginx does not speak; ``--state WORK_DIR/state.json`` watches
  the CPU of every baseline process and of the PostgreSQL backends of its databases.

Only loopback targets and databases are accepted.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

from bench import fixtures, procfs, report, scenarios, seed
from bench.baselines import api, runner
from bench.loadgen import LoadError, LoadPlan, Scenario, run_load
from bench.processes import PostgresDatabases, StartError
from bench.target import TargetError, parse_target

SCENARIOS = ("get-movie-json", "list-movies-json", "create-movie-json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the baseline on fresh databases until Ctrl-C")
    up.add_argument("--work-dir", type=pathlib.Path, help="logs, keys, state.json")
    up.add_argument(
        "--postgres",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        help="a loopback PostgreSQL server URL with rights to create databases",
    )
    up.add_argument("--movies", type=int, default=1000, help="movies to seed")
    up.add_argument("--db-access", choices=api.DB_ACCESS_CHOICES, default=None)
    up.add_argument("--nginx-workers", default="auto")

    run = commands.add_parser("run", help="one JSON scenario against a running baseline")
    run.add_argument("scenario", choices=SCENARIOS)
    run.add_argument("--target", required=True, help="nginx HOST:PORT on loopback")
    run.add_argument("--ids-from-database", metavar="URL", help="the movie database")
    run.add_argument("--ids", type=int, default=1000, help="movie ids to spread calls over")
    run.add_argument("--token", help="an admin access token (create-movie-json)")
    run.add_argument("--key-dir", type=pathlib.Path, help="mint an admin token with these keys")
    run.add_argument("--mode", choices=("closed", "open"), default="closed")
    run.add_argument("--concurrency", type=int, default=32)
    run.add_argument("--rate", type=float, default=0.0)
    run.add_argument("--duration", type=float, default=6.0)
    run.add_argument("--warmup", type=float, default=2.0)
    run.add_argument("--processes", type=int, default=2)
    run.add_argument("--timeout", type=float, default=5.0)
    run.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    run.add_argument("--state", type=pathlib.Path, help="WORK_DIR/state.json of `up`")
    run.add_argument("--json", action="store_true")
    return parser


def _up(args: argparse.Namespace) -> int:
    work_dir = (args.work_dir or pathlib.Path(tempfile.mkdtemp(prefix="baseline-"))).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    databases = PostgresDatabases(args.postgres)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        urls = databases.create(["movie", "cast"])
        key_dir = work_dir / "keys"
        from services.common.auth import ensure_keypair

        _, public_path = ensure_keypair(key_dir)
        workers = int(args.nginx_workers) if args.nginx_workers.isdigit() else args.nginx_workers
        baseline = runner.start_baseline(
            work_dir, urls["movie"], urls["cast"], public_path,
            db_access=args.db_access, nginx_workers=workers,
        )  # fmt: skip
        try:
            token = fixtures.mint_admin_token(key_dir)
            cast_ids = fixtures.ensure_casts(baseline.target, token)
            seed.seed_movies(urls["movie"], args.movies, cast_ids)
            state: dict[str, Any] = {
                "target": baseline.target.address,
                "db_access": baseline.db_access,
                "pids": baseline.pids(),
                "database_urls": urls,
                "database_prefix": databases.prefix,
                "key_dir": str(key_dir),
                "cast_ids": list(cast_ids),
            }
            (work_dir / "state.json").write_text(json.dumps(state, indent=2))
            print(json.dumps(state, indent=2))
            print(f"baseline is up on {baseline.target.address}; Ctrl-C stops it", flush=True)
            stop.wait()
        finally:
            baseline.stop()
    finally:
        databases.drop()
    return 0


def _watched(args: argparse.Namespace) -> Callable[[], dict[str, list[int]]]:
    """What to measure the CPU of; asked once the warm-up is over, when pools are full."""
    fixed: dict[str, list[int]] = {}
    prefix: str | None = None
    if args.state is not None:
        state = json.loads(args.state.read_text())
        prefix = str(state["database_prefix"])
        for name, pids in state["pids"].items():
            fixed.setdefault(name, []).extend(int(p) for p in pids)
    for value in args.watch:
        name, sep, pid = value.partition("=")
        if not sep or not pid.isdigit():
            raise SystemExit(f"--watch takes NAME=PID, got {value!r}")
        fixed.setdefault(name, []).append(int(pid))

    def groups() -> dict[str, list[int]]:
        if prefix is None:
            return fixed
        # The PostgreSQL backends serving the baseline's own databases.
        return {**fixed, "postgres": procfs.postgres_backends(prefix)}

    return groups


def build_scenario(args: argparse.Namespace) -> Scenario:
    target = parse_target(args.target)
    if args.scenario == "list-movies-json":
        return scenarios.ListMoviesJson(target, timeout=args.timeout)
    if args.scenario == "create-movie-json":
        token = args.token or (fixtures.mint_admin_token(args.key_dir) if args.key_dir else None)
        if token is None:
            raise SystemExit("create-movie-json needs --token (an admin's) or --key-dir")
        return scenarios.CreateMovieJson(
            target, token, fixtures.ensure_casts(target, token), args.timeout
        )
    if not args.ids_from_database:
        raise SystemExit("get-movie-json needs --ids-from-database URL (the movie database)")
    ids = runner.movie_ids(args.ids_from_database, args.ids)
    if not ids:
        raise SystemExit("no movies in that database")
    return scenarios.GetMovieJson(target, tuple(ids), args.timeout)


def _run(args: argparse.Namespace) -> int:
    plan = LoadPlan(
        mode=args.mode,
        concurrency=args.concurrency,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        processes=args.processes,
        timeout=args.timeout,
    )
    watched = _watched(args)
    result = run_load(build_scenario(args), plan, watch=watched)
    print(json.dumps(report.summary(result), indent=2) if args.json else report.text(result))
    return 1 if result.ok == 0 else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _up(args) if args.command == "up" else _run(args)
    except (TargetError, ValueError, LoadError, fixtures.FixtureError, StartError) as error:
        print(f"bench.baselines: {error}", file=sys.stderr)
        return 2
    except (scenarios.ScenarioError, OSError) as error:
        print(f"bench.baselines: the target did not answer: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
