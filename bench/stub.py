"""The echo ceiling: ``cinema.v1.MovieService`` on Cinema's server stack, with no database.

``python -m bench.stub --port 0`` runs :class:`services.common.server.CinemaServer`, the
bootstrap every service uses (same interceptors, health, reflection, grpc.aio options),
with a servicer whose ``GetMovie`` parses the request and answers a canned movie of the
benchmark shape, and whose ``ListMovies`` answers a canned page. Nothing else happens per
call, so it is the most a Python gRPC service can do here; GetMovie against it, direct and
through an Envoy rendered from the gateway's own config, gives the ceilings every real
figure is read against.

``--thread-hop`` makes each call also pass through ``asyncio.to_thread`` (as the real
servicers do to run their blocking use cases), to price that hop on its own. ``--bare``
serves the same servicer on a plain ``grpc.aio.server()`` with no interceptors, health or
reflection, to price Cinema's bootstrap (mostly its two interceptors) on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import grpc

from bench.catalogue import canned_movie
from cinema.v1 import movie_pb2
from services.common.auth import TokenVerifier, ensure_keypair
from services.common.server import CinemaServer, ServiceSpec

FULL_NAME = "cinema.v1.MovieService"
_CANNED_CASTS = ("0" * 32, "1" * 32, "2" * 32)


def _nothing() -> None:
    return None


class StubMovieHandlers:
    """GetMovie and ListMovies with canned answers; other RPCs are UNIMPLEMENTED.

    Registered as generic handlers with the generated (de)serialisers, so each call still
    parses its request and serialises its response, as a real servicer's would.
    """

    def __init__(self, *, thread_hop: bool) -> None:
        self._thread_hop = thread_hop
        self._movie = canned_movie("f" * 32, _CANNED_CASTS)
        self._page = movie_pb2.ListMoviesResponse(
            movies=[canned_movie(f"{n:032x}", _CANNED_CASTS) for n in range(20)],
            next_page_token="",
        )

    async def get_movie(
        self, request: movie_pb2.GetMovieRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> movie_pb2.Movie:
        if self._thread_hop:
            await asyncio.to_thread(_nothing)
        return self._movie

    async def list_movies(
        self, request: movie_pb2.ListMoviesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> movie_pb2.ListMoviesResponse:
        if self._thread_hop:
            await asyncio.to_thread(_nothing)
        return self._page

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The handlers under ``cinema.v1.MovieService``."""
        return grpc.method_handlers_generic_handler(
            FULL_NAME,
            {
                "GetMovie": grpc.unary_unary_rpc_method_handler(
                    self.get_movie,
                    request_deserializer=movie_pb2.GetMovieRequest.FromString,
                    response_serializer=movie_pb2.Movie.SerializeToString,
                ),
                "ListMovies": grpc.unary_unary_rpc_method_handler(
                    self.list_movies,
                    request_deserializer=movie_pb2.ListMoviesRequest.FromString,
                    response_serializer=movie_pb2.ListMoviesResponse.SerializeToString,
                ),
            },
        )


def build_server(public_key_pem: bytes, *, host: str, port: int, thread_hop: bool) -> CinemaServer:
    """The stub on Cinema's server bootstrap (health SERVING at once: no database)."""

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            (StubMovieHandlers(thread_hop=thread_hop).generic_handler(),)
        )

    spec = ServiceSpec(full_name=FULL_NAME, register=register, database_ping=lambda: True)
    verifier = TokenVerifier(public_key_pem, issuer="cinema", audience="cinema")
    return CinemaServer(spec, verifier, host=host, port=port, grace_seconds=1.0)


async def _serve(
    host: str, port: int, *, thread_hop: bool, bare: bool, key_dir: pathlib.Path
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if bare:
        plain = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        plain.add_generic_rpc_handlers(
            (StubMovieHandlers(thread_hop=thread_hop).generic_handler(),)
        )
        bound = plain.add_insecure_port(f"{host}:{port}")
        await plain.start()
        print(f"stub listening on port {bound}", flush=True)
        await stop.wait()
        await plain.stop(1.0)
        return
    _, public_path = ensure_keypair(key_dir)
    server = build_server(public_path.read_bytes(), host=host, port=port, thread_hop=thread_hop)
    await server.start()
    # The parent reads the port from this line.
    print(f"stub listening on port {server.port}", flush=True)
    await stop.wait()
    await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stub until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.stub", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--thread-hop", action="store_true")
    parser.add_argument("--bare", action="store_true", help="no interceptors, health, reflection")
    parser.add_argument("--key-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cinema-stub-") as scratch:
        key_dir = args.key_dir or pathlib.Path(scratch)
        asyncio.run(
            _serve(
                args.host, args.port, thread_hop=args.thread_hop, bare=args.bare, key_dir=key_dir
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
