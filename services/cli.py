"""The ``cinema`` command.

* ``cinema serve SERVICE [--host H] [--port N]``: one service process (what a container
  runs); settings from the environment (see the README).
* ``cinema migrate SERVICE``: apply the service's migrations and exit (``serve`` applies
  them at start too).
"""

from __future__ import annotations

import argparse
import asyncio
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
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from services.common.server import serve

            asyncio.run(serve(args.service, host=args.host, port=args.port))
        elif args.command == "migrate":
            from services.common import logs, migrations
            from services.common.db import make_engine
            from services.common.settings import Settings

            settings = Settings.from_env(args.service)
            logs.configure(args.service, log_format=settings.log_format)
            migrations.upgrade(make_engine(settings.database_url), args.service)
    except SettingsError as error:
        print(f"cinema: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
