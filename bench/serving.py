"""The serving-model A/B: GetMovie's use case under each way a Python gRPC service can
serve it, each beside its own echo, all measured in one suite run.

``python -m bench.serving MODEL --database-url URL [--echo] [--threads N]`` serves
``cinema.v1.MovieService/GetMovie`` (and ListMovies' first page, so the load generator can
find ids) on a free loopback port and prints ``serving MODEL on port N``. Every model runs
the same handler body: the real use case (``MovieService.get_movie``, the real Core
repository on the real engine) and the real ``movie_to_proto``; ``--echo`` answers a canned
movie instead, which prices the transport alone. No interceptors, health or reflection:
those are the same in every model and are priced by the echo stub (:mod:`bench.stub`).

The models:

``aio-thread``
    grpc.aio on asyncio's default loop, the use case in ``asyncio.to_thread``: the model
    Cinema served with before it adopted ``sync``.
``aio-uvloop-thread``
    The same on uvloop (``uvloop.install()``).
``sync``
    grpcio's synchronous server: a pool of worker threads, each running one call from
    request to response with no event loop and no hand-off (what Cinema serves with).
``aio-asyncpg``
    grpc.aio on uvloop with GetMovie's query on asyncpg (an asyncio PostgreSQL driver),
    awaited on the loop: no thread hop at all. Only the read is ported (the bench needs
    no more); adopting it would need a second, async repository for every service and
    still a thread for SQLite.
``aio-thread`` on grpcio 1.83.2
    ``aio-thread`` run with grpcio 1.83.2, the last release before the asyncio server's
    accept loop started paying a task and two loop hops per call (grpc/grpc#41796, landed
    in 1.84.0; the fix is grpc/grpc#43461). :func:`prepare_grpcio` installs that grpcio
    into a folder of the work dir and regenerates the stubs with the matching
    grpcio-tools, since stubs from a newer grpcio-tools refuse an older grpcio.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from bench.catalogue import canned_movie
from bench.scenarios import NoCasts
from cinema.v1 import movie_pb2
from services.common.context import RequestContext
from services.movie.domain import MovieView

MODELS = ("aio-thread", "aio-uvloop-thread", "sync", "aio-asyncpg")
#: The grpcio release before the asyncio accept-loop regression (grpc/grpc#41796 is in
#: 1.84.0 and later).
GRPCIO_BEFORE_REGRESSION = "1.83.2"
#: Worker threads (and pooled connections) of every model: the services' default.
THREADS = 4
_SERVICE = "cinema.v1.MovieService"
_CANNED_CASTS = ("0" * 32, "1" * 32, "2" * 32)
_ASYNCPG_GET = (
    "SELECT id, title, plot, genres, cast_ids, price_currency, price_amount_minor,"
    " create_time, update_time FROM movies WHERE id = $1"
)


class _Handlers:
    """GetMovie (the use case, or canned) and a ListMovies that lists ids, per model."""

    def __init__(self, database_url: str, *, echo: bool, threads: int) -> None:
        from services.common.db import EnginePools, make_engine
        from services.movie.repository import SqlAlchemyMovieUnitOfWork
        from services.movie.service import MovieService

        self.echo = echo
        self.canned = canned_movie("f" * 32, _CANNED_CASTS)
        self.sessions = EnginePools(make_engine(database_url, pool_size=threads))
        self.service = MovieService(
            functools.partial(SqlAlchemyMovieUnitOfWork, self.sessions), casts=NoCasts()
        )
        self.context = RequestContext()

    def get_movie(self, request: movie_pb2.GetMovieRequest) -> movie_pb2.Movie:
        from services.movie.servicer import movie_to_proto

        if self.echo:
            return self.canned
        found = self.service.get_movie(request.id, MovieView.BASIC, self.context)
        return movie_to_proto(found.movie)

    def list_movies(self, request: movie_pb2.ListMoviesRequest) -> movie_pb2.ListMoviesResponse:
        from services.movie.servicer import movie_to_proto

        page = self.service.list_movies(request.page_size, request.page_token, genre="", cast_id="")
        return movie_pb2.ListMoviesResponse(
            movies=[movie_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )


def _generic(get: Any, listing: Any) -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "GetMovie": grpc.unary_unary_rpc_method_handler(
                get,
                request_deserializer=movie_pb2.GetMovieRequest.FromString,
                response_serializer=movie_pb2.Movie.SerializeToString,
            ),
            "ListMovies": grpc.unary_unary_rpc_method_handler(
                listing,
                request_deserializer=movie_pb2.ListMoviesRequest.FromString,
                response_serializer=movie_pb2.ListMoviesResponse.SerializeToString,
            ),
        },
    )


def _announce(model: str, port: int) -> None:
    # The parent reads the port from this line.
    print(f"serving {model} on port {port}", flush=True)


def _serve_sync(handlers: _Handlers, model: str, threads: int) -> None:
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=threads),
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers(
        (
            _generic(
                lambda request, _context: handlers.get_movie(request),
                lambda request, _context: handlers.list_movies(request),
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    _announce(model, port)
    stop.wait()
    server.stop(1.0).wait()


async def _asyncpg_get(database_url: str, threads: int) -> Callable[[str], Awaitable[Any]]:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    from services.movie.repository import _to_domain

    url = make_url(database_url).set(drivername="postgresql")

    async def init(connection: Any) -> None:
        # The movie table's JSON columns, decoded as SQLAlchemy's JSON type does.
        await connection.set_type_codec(
            "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )

    pool = await asyncpg.create_pool(
        url.render_as_string(hide_password=False), min_size=threads, max_size=threads, init=init
    )

    async def get(movie_id: str) -> Any:
        async with pool.acquire() as connection:
            row = await connection.fetchrow(_ASYNCPG_GET, movie_id)
        return _to_domain(tuple(row)) if row else None

    return get


async def _serve_aio(handlers: _Handlers, model: str, database_url: str, threads: int) -> None:
    from services.movie.servicer import movie_to_proto

    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=threads))

    async def listing(request: movie_pb2.ListMoviesRequest, _context: Any) -> Any:
        return await asyncio.to_thread(handlers.list_movies, request)

    if model == "aio-asyncpg" and not handlers.echo:
        fetch = await _asyncpg_get(database_url, threads)

        async def get(request: movie_pb2.GetMovieRequest, context: Any) -> Any:
            movie = await fetch(request.id)
            if movie is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such movie")
            return movie_to_proto(movie)

    elif handlers.echo and model == "aio-asyncpg":

        async def get(request: movie_pb2.GetMovieRequest, context: Any) -> Any:
            return handlers.canned

    else:

        async def get(request: movie_pb2.GetMovieRequest, context: Any) -> Any:
            return await asyncio.to_thread(handlers.get_movie, request)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_generic(get, listing),))
    port = server.add_insecure_port("127.0.0.1:0")
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    _announce(model, port)
    await stop.wait()
    await server.stop(1.0)


def run(model: str, database_url: str, *, echo: bool, threads: int) -> None:
    """Serve GetMovie under ``model`` until SIGTERM/SIGINT."""
    sys.setswitchinterval(0.001)  # as services.common.server.serve does
    handlers = _Handlers(database_url, echo=echo, threads=threads)
    try:
        if model == "sync":
            _serve_sync(handlers, model, threads)
            return
        if model in ("aio-uvloop-thread", "aio-asyncpg"):
            import uvloop

            uvloop.install()
        asyncio.run(_serve_aio(handlers, model, database_url, threads))
    finally:
        handlers.sessions.close()


# --- grpcio before the regression ----------------------------------------------------------


def prepare_grpcio(version: str, work_dir: pathlib.Path) -> pathlib.Path:
    """A folder to put first on ``PYTHONPATH``: grpcio ``version`` and Cinema's stubs
    regenerated by the matching grpcio-tools (kept apart, so its protobuf never shadows
    ours). Made once per work dir."""
    root = work_dir / f"grpcio-{version}"
    runtime, tools = root / "runtime", root / "tools"
    if (root / "ready").exists():
        return runtime
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "--target", str(runtime), f"grpcio=={version}"], check=True)
    subprocess.run(
        [*pip, "--target", str(tools), f"grpcio-tools=={version}", f"grpcio=={version}"],
        check=True,
    )
    repo = pathlib.Path(__file__).resolve().parent.parent
    protos = sorted((repo / "protos").rglob("*.proto"))
    from google.api import annotations_pb2  # googleapis-common-protos ships its .proto files

    googleapis = pathlib.Path(annotations_pb2.__file__).resolve().parent.parent.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{repo / 'protos'}",
            f"-I{googleapis}",
            f"--python_out={runtime}",
            f"--grpc_python_out={runtime}",
            *(str(p.relative_to(repo / "protos")) for p in protos),
        ],
        check=True,
        cwd=repo / "protos",
        env={**os.environ, "PYTHONPATH": str(tools)},
    )
    # Regular packages, so they win over the editable install's ``cinema`` package.
    for package in ("cinema", "cinema/v1"):
        (runtime / package / "__init__.py").touch()
    (root / "ready").write_text(version)
    return runtime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("--database-url", required=True, help="the movie database (PostgreSQL)")
    parser.add_argument("--echo", action="store_true", help="answer a canned movie")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args(argv)
    run(args.model, args.database_url, echo=args.echo, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
