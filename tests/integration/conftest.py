"""Servers for integration tests: real services on 127.0.0.1:0 with real databases,
calling each other directly (the gateway is covered by the end-to-end tests)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cinema.v1 import cast_pb2_grpc, movie_pb2_grpc
from services.common.context import Role
from services.trace_store import TraceReceiver
from tests.conftest import DatabaseFactory
from tests.support.servers import RunningService, service_settings, start_service
from tests.support.tokens import SigningKeys


@dataclass
class Catalogue:
    cast: RunningService
    movie: RunningService
    casts: cast_pb2_grpc.CastServiceStub
    movies: movie_pb2_grpc.MovieServiceStub
    admin: tuple[tuple[str, str], ...]
    user: tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def catalogue(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Catalogue]:
    env = keys.env()
    cast = start_service("cast", service_settings("cast", databases("cast"), env))
    movie = start_service(
        "movie",
        service_settings("movie", databases("movie"), {**env, "CAST_SERVICE_ADDR": cast.address}),
    )
    try:
        yield Catalogue(
            cast=cast,
            movie=movie,
            casts=cast_pb2_grpc.CastServiceStub(cast.channel()),
            movies=movie_pb2_grpc.MovieServiceStub(movie.channel()),
            admin=keys.metadata("admin-1", Role.ADMIN),
            user=keys.metadata("user-1", Role.USER),
        )
    finally:
        movie.stop()
        cast.stop()


@pytest.fixture
def receiver(tmp_path: pathlib.Path) -> Iterator[TraceReceiver]:
    """A loopback OTLP receiver keeping spans under ``tmp_path`` (read them with TraceStore)."""
    started = TraceReceiver(tmp_path)
    started.start()
    yield started
    started.stop(grace=0)
