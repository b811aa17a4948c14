"""Composition root of the order service: settings -> engine, user and movie peers,
payment provider -> use cases -> server.

``cinema serve order`` (or ``python -m services.order``) runs it.
"""

from __future__ import annotations

import functools

import grpc

from cinema.v1 import order_pb2_grpc
from services.common import handled_calls, migrations
from services.common.db import EnginePools, make_engine, ping
from services.common.events.bus import build_runtime
from services.common.events.store import EventLog
from services.common.peers import PeerChannel
from services.common.server import ServiceSpec
from services.common.settings import Settings
from services.order import events
from services.order.models import EVENTS
from services.order.movie_catalogue import GrpcMovieCatalogue
from services.order.payments import payment_provider
from services.order.repository import SqlAlchemyOrderUnitOfWork
from services.order.service import OrderService
from services.order.servicer import OrderServicer
from services.order.user_directory import GrpcUserDirectory

FULL_NAME = "cinema.v1.OrderService"


def build(settings: Settings) -> ServiceSpec:
    """Wire the order service from ``settings`` and bring its schema up to date."""
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    migrations.upgrade(engine, "order")
    sessions = EnginePools(engine)
    user_peer = PeerChannel(
        "user", settings.user_service_addr, timeout_ceiling=settings.peer_timeout_seconds
    )
    movie_peer = PeerChannel(
        "movie", settings.movie_service_addr, timeout_ceiling=settings.peer_timeout_seconds
    )
    log = EventLog(EVENTS, enabled=settings.events_enabled)
    uow = functools.partial(SqlAlchemyOrderUnitOfWork, sessions, events=log)
    service = OrderService(
        uow,
        GrpcUserDirectory(user_peer),
        GrpcMovieCatalogue(movie_peer),
        payment_provider(settings.payment_provider),
    )

    def register(server: grpc.Server) -> None:
        order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(service), server)

    def close() -> None:
        user_peer.close()
        movie_peer.close()
        sessions.close()

    return ServiceSpec(
        full_name=FULL_NAME,
        register=register,
        database_ping=functools.partial(ping, engine),
        close=close,
        events=build_runtime(settings, log, sessions, events.consumer(uow, service)),
        handled_call=handled_calls.handled_by(uow),
    )


if __name__ == "__main__":
    from services.cli import main

    main(["serve", "order"])
