"""The ``cinema`` command.

* ``cinema serve SERVICE [--host H] [--port N]``: one service process (what a container
  runs); settings from the environment (see the README).
* ``cinema migrate SERVICE``: apply the service's migrations and exit (``serve`` applies
  them at start too).
* ``cinema up [--port 8080] [--admin-port 9901] [--replicas 2] [--data-dir DIR]``: the
  whole system on this machine (see :mod:`services.launcher`).
* ``cinema logs [SERVICE] [--data-dir DIR] [-n N] [--no-follow]``: the logs of ``cinema
  up``, readable, then follow them (see :mod:`services.logs_follow`).
* ``cinema gateway-sidecar``: reflection and ``/healthz`` for the gateway
  (see :mod:`gateway.sidecar`).
* ``cinema trace [TRACE_ID] [--list] [--data-dir DIR]``: a trace that ``cinema up
  --traces`` kept, as a waterfall, or the recent ones (see :mod:`services.trace_view`).
* ``cinema trace-store [--data-dir DIR] [--port N]``: the OTLP receiver that keeps them
  (see :mod:`services.trace_store`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from services.common.settings import SERVICES, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cinema", description="Cinema: a movie shop on gRPC.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one service process")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")  # noqa: S104
    serve.add_argument("--port", type=int, default=50051, help="port to bind (0: any free one)")
    migrate = commands.add_parser("migrate", help="apply a service's database migrations")
    migrate.add_argument("service", choices=SERVICES)
    up = commands.add_parser(
        "up",
        help="run the whole system on this machine: Envoy and every service",
        description="Envoy on --port and every service with --replicas processes. SQLite "
        "files in --data-dir unless database URLs are given (--database-url SERVICE=URL or "
        "MOVIE_DATABASE_URL, CAST_DATABASE_URL, USER_DATABASE_URL, ORDER_DATABASE_URL).",
    )
    up.add_argument("--port", type=int, default=8080, help="public port (default 8080)")
    up.add_argument("--admin-port", type=int, default=9901, help="Envoy admin, loopback only")
    up.add_argument("--replicas", type=int, default=2, help="processes per service (default 2)")
    up.add_argument("--data-dir", default="cinema-data", help="databases, keys, logs")
    up.add_argument(
        "--listen", default="127.0.0.1", help="address of the public port (0.0.0.0: all)"
    )
    up.add_argument(
        "--traces", action="store_true",
        help="keep the spans of Envoy and every service locally (see `cinema trace`)",
    )  # fmt: skip
    up.add_argument(
        "--database-url", action="append", default=[], metavar="SERVICE=URL",
        help="run SERVICE on this SQLAlchemy URL (repeat per service)",
    )  # fmt: skip
    logs = commands.add_parser(
        "logs",
        help="show and follow the logs of `cinema up`, readable",
        description="The last --lines lines of the logs `cinema up` writes in --data-dir, "
        "one readable line per record and in time order, then follow them (like tail -F: "
        "a restart of the system does not stop it). Ctrl-C ends it.",
    )
    logs.add_argument(
        "process", nargs="?", default=None, metavar="SERVICE",
        help="a service (movie: all its replicas), one process (movie-1, envoy, sidecar, "
        "launcher), or nothing: everything",
    )  # fmt: skip
    logs.add_argument("--data-dir", default="cinema-data", help="as given to `cinema up`")
    logs.add_argument(
        "-n", "--lines", type=int, default=10, metavar="N", help="lines of history (default 10)"
    )
    logs.add_argument("--no-follow", action="store_true", help="print the history and exit")
    # Listed for --help; its arguments are parsed by gateway.sidecar itself (see main).
    commands.add_parser("gateway-sidecar", help="the gateway's reflection and /healthz companion")
    _add_trace_commands(commands)
    _add_mail_command(commands)
    keys = commands.add_parser(
        "keys",
        help="the JWT signing keys of `cinema up` (a key ring)",
        description="rotate: a new signing key for the services of --data-dir (or "
        "--keys-dir); the old keys keep verifying the tokens they signed until those "
        "expire, then leave the ring and /.well-known/jwks.json. list: the ring's keys.",
    )
    keys.add_argument("action", choices=("rotate", "list"))
    keys.add_argument("--data-dir", default="cinema-data", help="as given to `cinema up`")
    keys.add_argument("--keys-dir", default=None, help="the ring itself (default DATA_DIR/keys)")
    keys.add_argument(
        "--token-ttl", type=int, default=None, metavar="SECONDS",
        help="the longest access token lifetime (default $CINEMA_ACCESS_TOKEN_TTL_SECONDS or 300)",
    )  # fmt: skip
    return parser


def _keys(args: argparse.Namespace) -> int:
    """``cinema keys rotate|list``."""
    import datetime as dt
    import os
    import pathlib

    from services.common import keyring

    directory = pathlib.Path(args.keys_dir or pathlib.Path(args.data_dir) / "keys")
    if args.action == "rotate":
        ttl = args.token_ttl or int(os.environ.get("CINEMA_ACCESS_TOKEN_TTL_SECONDS") or 300)
        if not keyring.read(directory).verifying:
            raise SettingsError(f"no key ring in {directory} (start `cinema up` once first)")
        kid = keyring.rotate(directory, token_ttl_seconds=ttl)
        grace = ttl + keyring.RETIRE_MARGIN_SECONDS
        print(f"new signing key {kid}; the others verify for {grace}s more")
    keys = keyring.read(directory)
    signing = keys.signing[0] if keys.signing else None
    for key in keys.verifying:
        made = dt.datetime.fromtimestamp(key.created, dt.UTC).isoformat(timespec="seconds")
        if key.kid == signing:
            state = "signs"
        elif key.retire_at is not None:
            until = dt.datetime.fromtimestamp(key.retire_at, dt.UTC).isoformat(timespec="seconds")
            state = f"verifies until {until}"
        else:
            state = "verifies"
        print(f"{key.kid}  made {made}  {state}")
    return 0


def _add_trace_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trace = commands.add_parser(
        "trace",
        help="print a trace kept by `cinema up --traces` as a waterfall",
        description="One trace, one line per span under its parent: start, duration, a bar "
        "placing it in the trace, ERROR, service and name. Without TRACE_ID the latest "
        "trace with an error among the last 20, else the slowest of them.",
    )
    trace.add_argument("trace_id", nargs="?", default=None, metavar="TRACE_ID")
    trace.add_argument("--data-dir", default="cinema-data", help="as given to `cinema up`")
    trace.add_argument("--list", action="store_true", help="list the recent traces instead")
    trace.add_argument(
        "-n", "--limit", type=int, default=20, metavar="N",
        help="traces --list shows (default 20)",
    )  # fmt: skip
    store = commands.add_parser(
        "trace-store",
        help="receive OTLP traces and keep them for `cinema trace`",
        description="An OTLP/gRPC receiver on 127.0.0.1 that keeps spans in "
        "DATA_DIR/traces (rotated at --max-file-bytes, one old file kept); logs "
        "'... listening on port N' once bound. SIGTERM or SIGINT stops it.",
    )
    store.add_argument("--data-dir", default="cinema-data", help="as given to `cinema up`")
    store.add_argument(
        "--port", type=int, default=4317,
        help="port to bind on 127.0.0.1 (default 4317, OTLP's; 0: any free one)",
    )  # fmt: skip
    store.add_argument(
        "--max-file-bytes", type=int, default=20 * 1024 * 1024, metavar="N",
        help="rotate spans.jsonl past this size (default 20 MiB)",
    )  # fmt: skip
    store.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")


def _add_mail_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mail = commands.add_parser(
        "mail",
        help="print the newest mail `cinema up` kept (a registration link)",
        description="The user service's mail lands in DATA_DIR/mail when no mail server is "
        "set (CINEMA_MAIL_URL). Prints the newest one, to EMAIL when given.",
    )
    mail.add_argument("--to", default=None, metavar="EMAIL", help="only mail to this address")
    mail.add_argument("--data-dir", default="cinema-data", help="as given to `cinema up`")
    mail.add_argument("--link", action="store_true", help="print only its registration link")
    mail.add_argument(
        "--wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="when there is no mail yet, wait this long for one (default 5)",
    )


def _exit_now(status: int) -> None:
    """Exit without the interpreter's teardown, once everything is closed and logged.

    A service that has stopped has nothing left to clean up, but tearing the interpreter
    down (a last garbage collection over grpc, protobuf and SQLAlchemy objects) took 0.5 s
    alone and 3 s or more when every process of ``cinema up`` stopped at once on two cores:
    most of the time an idle ``cinema up`` took to stop.
    """
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["gateway-sidecar"]:
        from gateway import sidecar

        raise SystemExit(sidecar.main(arguments[1:]))
    args = _parser().parse_args(arguments)
    try:
        if args.command == "serve":
            from services.common.server import serve

            serve(args.service, host=args.host, port=args.port)
            _exit_now(0)
        elif args.command == "migrate":
            from services.common import logs, migrations
            from services.common.db import make_engine
            from services.common.settings import Settings

            settings = Settings.from_env(args.service)
            logs.configure(args.service, log_format=settings.log_format)
            migrations.upgrade(make_engine(settings.database_url), args.service)
        elif args.command == "up":
            import os
            import pathlib

            from services import launcher

            if args.replicas < 1:
                raise SettingsError("--replicas must be at least 1")
            grace_seconds = launcher.grace_seconds_from_env(os.environ)
            try:
                urls = launcher.database_urls_from_env(os.environ)
                urls.update(launcher.parse_database_urls(args.database_url))
            except ValueError as error:
                raise SettingsError(str(error)) from None
            options = launcher.Options(
                port=args.port,
                admin_port=args.admin_port,
                replicas=args.replicas,
                data_dir=pathlib.Path(args.data_dir),
                database_urls=urls,
                listen_address=args.listen,
                grace_seconds=grace_seconds,
                traces=args.traces,
            )
            raise SystemExit(launcher.run(options))
        elif args.command == "logs":
            import pathlib

            from services import logs_follow

            raise SystemExit(
                logs_follow.main(
                    pathlib.Path(args.data_dir),
                    args.process,
                    lines=args.lines,
                    follow=not args.no_follow,
                )
            )
        elif args.command == "trace":
            import os
            import pathlib

            from services import trace_view

            raise SystemExit(
                trace_view.main(
                    pathlib.Path(args.data_dir),
                    args.trace_id,
                    list_traces=args.list,
                    limit=args.limit,
                    colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR"),
                )
            )
        elif args.command == "mail":
            import pathlib

            from services import mailbox

            raise SystemExit(
                mailbox.main(
                    pathlib.Path(args.data_dir),
                    args.to,
                    link_only=args.link,
                    wait_seconds=args.wait,
                )
            )
        elif args.command == "keys":
            raise SystemExit(_keys(args))
        elif args.command == "trace-store":
            import pathlib

            from services import trace_store
            from services.common import logs

            if args.max_file_bytes < 1:
                raise SettingsError("--max-file-bytes must be positive")
            logs.configure("trace-store", log_format=args.log_format)
            status = trace_store.serve(
                pathlib.Path(args.data_dir), port=args.port, max_file_bytes=args.max_file_bytes
            )
            _exit_now(status)

    except SettingsError as error:
        print(f"cinema: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
