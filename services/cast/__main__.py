"""Composition root of the cast service: settings -> engine -> use cases -> server.

``cinema serve cast`` (or ``python -m services.cast``) runs it.
"""

from __future__ import annotations

import functools

import grpc

from cinema.v1 import cast_pb2_grpc
from services.cast.models import EVENTS
from services.cast.repository import SqlAlchemyCastUnitOfWork
from services.cast.service import CastService
from services.cast.servicer import CastServicer
from services.common import handled_calls, migrations
from services.common.db import EnginePools, make_engine, ping
from services.common.events.bus import build_runtime
from services.common.events.store import EventLog
from services.common.server import ServiceSpec
from services.common.settings import Settings

FULL_NAME = "cinema.v1.CastService"


def build(settings: Settings) -> ServiceSpec:
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    migrations.upgrade(engine, "cast")
    sessions = EnginePools(engine)
    log = EventLog(EVENTS, enabled=settings.events_enabled)
    uow = functools.partial(SqlAlchemyCastUnitOfWork, sessions, events=log)
    service = CastService(uow)

    def register(server: grpc.Server) -> None:
        cast_pb2_grpc.add_CastServiceServicer_to_server(CastServicer(service), server)

    return ServiceSpec(
        full_name=FULL_NAME,
        register=register,
        database_ping=functools.partial(ping, engine),
        close=sessions.close,
        events=build_runtime(settings, log, sessions),  # it publishes; it handles nothing
        handled_call=handled_calls.handled_by(uow),
    )


if __name__ == "__main__":
    from services.cli import main

    main(["serve", "cast"])
