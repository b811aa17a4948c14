"""A write that checked a peer before its transaction cannot name what the peer deleted in
the meantime (services/common/tombstones.py), on SQLite and on PostgreSQL.

The race is made by hand: the cast service still has the cast member (its delete has not
happened yet there, or its event is slow), while the movie service's consumer applies the
CastDeleted, through the movie service's own ``remove_cast`` on the movie database. A
CreateMovie naming it must then fail as if the cast service had said "unknown"; while the
consumer's transaction is still open, the create waits for it; and a movie written while
a check holds its lock is seen by the consumer's scan.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import Engine

from cinema.v1 import (
    cast_pb2,
    cast_pb2_grpc,
    money_pb2,
    movie_pb2,
    movie_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    user_pb2_grpc,
)
from services.common.context import Role
from services.common.db import EnginePools, make_engine
from services.common.events.store import EventLog
from services.common.ids import new_id
from services.common.money import Money
from services.common.tombstones import Tombstones
from services.movie.domain import CastMember, Movie, MovieFields
from services.movie.models import EVENTS
from services.movie.repository import SqlAlchemyMovieUnitOfWork
from services.movie.service import CAST, MovieService
from tests.conftest import DatabaseFactory
from tests.support.errors import call_error
from tests.support.mail import Mailbox, register
from tests.support.servers import RunningService, service_settings, start_service, start_shop
from tests.support.tokens import SigningKeys

Metadata = tuple[tuple[str, str], ...]
#: How long a write must stay blocked to count as waiting.
WAITS = 0.5
ADMIN_EMAIL = "tomb-admin@cinema.test"
PASSWORD = "tombstones-password"


class NoCasts:
    """remove_cast never asks the cast service."""

    def get_many(self, cast_ids: object, context: object) -> list[CastMember]:
        raise AssertionError("not called")


@dataclass
class Shop:
    casts: cast_pb2_grpc.CastServiceStub
    movies: movie_pb2_grpc.MovieServiceStub
    admin: Metadata
    uow: Callable[..., SqlAlchemyMovieUnitOfWork]
    consumer: MovieService  # the movie service's use cases on the same database

    def cast(self) -> str:
        name = f"Tomb {uuid.uuid4().hex[:6]}"
        return self.casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name=name)), metadata=self.admin
        ).id

    def create_movie(self, cast_id: str) -> movie_pb2.Movie:
        movie = movie_pb2.Movie(
            title="Tombstones",
            cast_ids=[cast_id],
            price=money_pb2.Money(currency_code="EUR", amount_minor=100),
        )
        return self.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie), metadata=self.admin, timeout=30
        )


@pytest.fixture(scope="module")
def shop(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Shop]:
    env = keys.env()
    movie_url = databases("movie")
    started: list[RunningService] = []
    engine = make_engine(movie_url)
    pools = EnginePools(engine)
    try:
        cast = start_service("cast", service_settings("cast", databases("cast"), env))
        started.append(cast)
        movie_env = {**env, "CAST_SERVICE_ADDR": cast.address}
        movie = start_service("movie", service_settings("movie", movie_url, movie_env))
        started.append(movie)
        uow = functools.partial(SqlAlchemyMovieUnitOfWork, pools, events=EventLog(EVENTS))
        yield Shop(
            casts=cast_pb2_grpc.CastServiceStub(cast.channel()),
            movies=movie_pb2_grpc.MovieServiceStub(movie.channel()),
            admin=keys.metadata("admin-1", Role.ADMIN),
            uow=uow,
            consumer=MovieService(uow, NoCasts()),
        )
    finally:
        for service in reversed(started):
            service.stop()
        pools.close()


def apply_cast_deleted(shop: Shop, cast_id: str) -> None:
    with shop.uow() as uow:
        shop.consumer.remove_cast(uow, cast_id)
        uow.commit()


def test_a_cast_member_the_consumer_saw_deleted_is_unknown_to_writes(shop: Shop) -> None:
    gone, kept = shop.cast(), shop.cast()
    apply_cast_deleted(shop, gone)  # the cast service still has it
    with pytest.raises(grpc.RpcError) as refused:
        shop.create_movie(gone)
    error = call_error(refused.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.violations) == ["movie.cast_ids[0]"]
    movie = shop.create_movie(kept)
    with pytest.raises(grpc.RpcError) as update_refused:
        shop.movies.UpdateMovie(
            movie_pb2.UpdateMovieRequest(movie=movie_pb2.Movie(id=movie.id, cast_ids=[gone])),
            metadata=shop.admin,
        )
    assert call_error(update_refused.value).code is grpc.StatusCode.INVALID_ARGUMENT
    got = shop.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie.id))
    assert list(got.cast_ids) == [kept]


def test_a_write_waits_for_a_burial_in_progress_and_then_refuses(shop: Shop) -> None:
    cast_id = shop.cast()
    with shop.uow() as uow, concurrent.futures.ThreadPoolExecutor(1) as pool:
        shop.consumer.remove_cast(uow, cast_id)  # buried, not committed yet
        create = pool.submit(shop.create_movie, cast_id)
        time.sleep(WAITS)
        assert not create.done(), "the create did not wait for the consumer's transaction"
        uow.commit()
        with pytest.raises(grpc.RpcError) as refused:
            create.result(timeout=30)
    assert call_error(refused.value).code is grpc.StatusCode.INVALID_ARGUMENT


def test_a_burial_waits_for_a_checked_write_and_its_scan_then_sees_it(shop: Shop) -> None:
    cast_id = shop.cast()
    now = dt.datetime.now(dt.UTC)
    fields = MovieFields("Checked first", "", (), (cast_id,), Money("EUR", 100))
    movie = Movie.new(new_id(), fields, now)
    with shop.uow() as writer, concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert writer.tombstones.buried({CAST: [cast_id]}) == set()  # the write's check
        writer.movies.add(movie)
        burial = pool.submit(apply_cast_deleted, shop, cast_id)
        time.sleep(WAITS)
        assert not burial.done(), "the consumer did not wait for the checked write"
        writer.commit()
        burial.result(timeout=30)
    got = shop.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie.id))
    assert list(got.cast_ids) == []  # the consumer's scan saw the movie and removed it


@dataclass
class OrderShop:
    users: user_pb2_grpc.UserServiceStub
    movies: movie_pb2_grpc.MovieServiceStub
    orders: order_pb2_grpc.OrderServiceStub
    order_engine: Engine
    admin: Metadata


@pytest.fixture(scope="module")
def order_shop(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[OrderShop]:
    urls: dict[str, str] = {}

    def database(service: str) -> str:
        return urls.setdefault(service, databases(f"{service}_tomb"))

    env = keys.env()
    with start_shop(env, database, admin_email=ADMIN_EMAIL, admin_password=PASSWORD) as started:
        engine = make_engine(urls["order"])
        try:
            yield OrderShop(
                users=user_pb2_grpc.UserServiceStub(started.user.channel()),
                movies=movie_pb2_grpc.MovieServiceStub(started.movie.channel()),
                orders=order_pb2_grpc.OrderServiceStub(started.order.channel()),
                order_engine=engine,
                admin=keys.metadata("admin-1", Role.ADMIN),
            )
        finally:
            engine.dispose()


def test_an_order_cannot_name_a_buyer_or_movie_the_consumer_saw_deleted(
    order_shop: OrderShop, keys: SigningKeys
) -> None:
    shop = order_shop
    email = f"tomb-{uuid.uuid4().hex[:8]}@cinema.test"
    buyer_id = register(shop.users, Mailbox(keys.mail_dir), email, PASSWORD, "Tomb").id
    buyer = keys.metadata(buyer_id)
    price = money_pb2.Money(currency_code="EUR", amount_minor=100)
    movie_ids = [
        shop.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie_pb2.Movie(title=title, price=price)),
            metadata=shop.admin,
        ).id
        for title in ("Kept", "Gone")
    ]

    def order() -> order_pb2.Order:
        items = [order_pb2.OrderItem(movie_id=m, quantity=1) for m in movie_ids]
        return shop.orders.CreateOrder(
            order_pb2.CreateOrderRequest(
                order=order_pb2.Order(items=items), request_id=uuid.uuid4().hex
            ),
            metadata=buyer,
        )

    def consumer_buries(kind: str, resource_id: str) -> None:
        # What the order service's consumer does first with a MovieDeleted or UserDeleted
        # (OrderService.forget_movie / forget_user); the peers still have both.
        with shop.order_engine.begin() as connection:
            Tombstones(connection).bury(kind, resource_id, dt.datetime.now(dt.UTC))

    consumer_buries("movie", movie_ids[1])
    with pytest.raises(grpc.RpcError) as unknown:
        order()
    refused = call_error(unknown.value)
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert list(refused.violations) == ["order.items[1].movie_id"]
    movie_ids.pop()
    assert order().status == order_pb2.ORDER_STATUS_PENDING
    consumer_buries("user", buyer_id)
    with pytest.raises(grpc.RpcError) as gone:
        order()
    assert call_error(gone.value).reason == "BUYER_NOT_FOUND"


def test_a_batch_burying_in_any_order_beside_a_check_cannot_deadlock(shop: Shop) -> None:
    # A consumer's batch buries ids in event order ("b" first), a check asks for both.
    # With a lock per id taken in two orders this deadlocked (PostgreSQL aborts one after
    # deadlock_timeout); with one lock the check waits, then sees both.
    first, second = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.UTC)

    def check() -> set[tuple[str, str]]:
        with shop.uow() as uow:
            return uow.tombstones.buried({CAST: [first, second]})

    with shop.uow() as consumer, concurrent.futures.ThreadPoolExecutor(1) as pool:
        consumer.tombstones.bury(CAST, second, now)
        checking = pool.submit(check)
        time.sleep(WAITS)
        consumer.tombstones.bury(CAST, first, now)
        consumer.commit()
        assert checking.result(timeout=30) == {(CAST, first), (CAST, second)}
