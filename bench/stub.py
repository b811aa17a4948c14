"""The echo ceiling: ``cinema.v1.MovieService`` on Cinema's server stack, with no database.

``python -m bench.stub --port 0`` runs :class:`services.common.server.CinemaServer`, the
bootstrap every service uses (same interceptors, health, reflection, server options),
with a servicer whose ``GetMovie`` parses the request and answers a canned movie of the
benchmark shape, and whose ``ListMovies`` answers a canned page. Nothing else happens per
call, so it is the most a Python gRPC service can do here; GetMovie against it, direct and
through an Envoy rendered from the gateway's own config, gives the ceilings every real
figure is read against.

``--bare`` serves the same servicer on a plain ``grpc.server()`` with the same worker
threads and no interceptors, health or reflection, to price Cinema's bootstrap (mostly
its two interceptors) on its own. The other serving models (grpc.aio with and without a
thread hop, uvloop, ...) have their own echo in :mod:`bench.serving`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import pathlib
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import grpc

from bench.catalogue import canned_movie
from cinema.v1 import movie_pb2
from services.common.auth import TokenVerifier, ensure_keypair
from services.common.server import CinemaServer, ServiceSpec

FULL_NAME = "cinema.v1.MovieService"
_CANNED_CASTS = ("0" * 32, "1" * 32, "2" * 32)
#: The services' default (``CINEMA_WORKER_THREADS``).
WORKER_THREADS = 4


class StubMovieHandlers:
    """GetMovie and ListMovies with canned answers; other RPCs are UNIMPLEMENTED.

    Registered as generic handlers with the generated (de)serialisers, so each call still
    parses its request and serialises its response, as a real servicer's would.
    """

    def __init__(self) -> None:
        self._movie = canned_movie("f" * 32, _CANNED_CASTS)
        self._page = movie_pb2.ListMoviesResponse(
            movies=[canned_movie(f"{n:032x}", _CANNED_CASTS) for n in range(20)],
            next_page_token="",
        )

    def get_movie(
        self, request: movie_pb2.GetMovieRequest, context: grpc.ServicerContext
    ) -> movie_pb2.Movie:
        return self._movie

    def list_movies(
        self, request: movie_pb2.ListMoviesRequest, context: grpc.ServicerContext
    ) -> movie_pb2.ListMoviesResponse:
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


def build_server(public_key_pem: bytes, *, host: str, port: int) -> CinemaServer:
    """The stub on Cinema's server bootstrap (health SERVING at once: no database)."""

    def register(server: grpc.Server) -> None:
        server.add_generic_rpc_handlers((StubMovieHandlers().generic_handler(),))

    spec = ServiceSpec(full_name=FULL_NAME, register=register, database_ping=lambda: True)
    verifier = TokenVerifier(public_key_pem, issuer="cinema", audience="cinema")
    # With /metrics as a service serves it by default, so the ceiling includes what every
    # call of the deployed stack does (the metrics interceptor).
    return CinemaServer(
        spec, verifier, host=host, port=port, grace_seconds=1.0,
        worker_threads=WORKER_THREADS, metrics_address="127.0.0.1:0",
    )  # fmt: skip


def _serve(host: str, port: int, *, bare: bool, key_dir: pathlib.Path) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if bare:
        plain = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=WORKER_THREADS),
            options=[("grpc.so_reuseport", 0)],
        )
        plain.add_generic_rpc_handlers((StubMovieHandlers().generic_handler(),))
        bound = plain.add_insecure_port(f"{host}:{port}")
        plain.start()
        print(f"stub listening on port {bound}", flush=True)
        stop.wait()
        plain.stop(1.0).wait()
        return
    _, public_path = ensure_keypair(key_dir)
    server = build_server(public_path.read_bytes(), host=host, port=port)
    server.start()
    # The parent reads the port from this line.
    print(f"stub listening on port {server.port}", flush=True)
    stop.wait()
    server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stub until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.stub", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bare", action="store_true", help="no interceptors, health, reflection")
    parser.add_argument("--key-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cinema-stub-") as scratch:
        key_dir = args.key_dir or pathlib.Path(scratch)
        _serve(args.host, args.port, bare=args.bare, key_dir=key_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
