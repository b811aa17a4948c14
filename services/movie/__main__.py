"""Composition root of the movie service: settings -> engine, cast peer -> use cases ->
server.

``cinema serve movie`` (or ``python -m services.movie``) runs it.
"""

from __future__ import annotations

import functools

import grpc

from cinema.v1 import movie_pb2_grpc
from services.common import handled_calls, migrations
from services.common.db import EnginePools, make_engine, ping
from services.common.events.bus import build_runtime
from services.common.events.store import EventLog
from services.common.peers import PeerChannel
from services.common.server import ServiceSpec
from services.common.settings import Settings
from services.movie import events
from services.movie.cast_directory import GrpcCastDirectory
from services.movie.models import EVENTS
from services.movie.repository import SqlAlchemyMovieUnitOfWork
from services.movie.service import MovieService
from services.movie.servicer import MovieServicer

FULL_NAME = "cinema.v1.MovieService"


def build(settings: Settings) -> ServiceSpec:
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    migrations.upgrade(engine, "movie")
    sessions = EnginePools(engine)
    cast_peer = PeerChannel(
        "cast", settings.cast_service_addr, timeout_ceiling=settings.peer_timeout_seconds
    )
    log = EventLog(EVENTS, enabled=settings.events_enabled)
    uow = functools.partial(SqlAlchemyMovieUnitOfWork, sessions, events=log)
    service = MovieService(uow, GrpcCastDirectory(cast_peer))

    def register(server: grpc.Server) -> None:
        movie_pb2_grpc.add_MovieServiceServicer_to_server(MovieServicer(service), server)

    def close() -> None:
        cast_peer.close()
        sessions.close()

    return ServiceSpec(
        full_name=FULL_NAME,
        register=register,
        database_ping=functools.partial(ping, engine),
        close=close,
        events=build_runtime(settings, log, sessions, events.consumer(uow, service.remove_cast)),
        handled_call=handled_calls.handled_by(uow),
    )


if __name__ == "__main__":
    from services.cli import main

    main(["serve", "movie"])
