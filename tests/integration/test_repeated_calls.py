"""Updates, deletes, cancels, logouts and revocations are safe for Envoy to repeat, on
SQLite and on PostgreSQL: a repeat of one call (the same ``x-cinema-call-id``) is answered
from the service's record of it (services/common/handled_calls.py) and changes nothing
again; the same change as a new call is a new call.

Each test first shows what the record prevents: the same request under a new call id
fails (NOT_FOUND, FAILED_PRECONDITION, CURRENT_PASSWORD_MISMATCH, UNAUTHENTICATED), or
would write over a newer change.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import Engine, text

from cinema.v1 import (
    cast_pb2,
    cast_pb2_grpc,
    money_pb2,
    movie_pb2,
    movie_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from services.common import handled_calls
from services.common.context import CALL_ID_METADATA, Role
from services.common.db import make_engine
from tests.conftest import DatabaseFactory
from tests.support.errors import CallError, call_error
from tests.support.mail import Mailbox, register
from tests.support.servers import service_settings, start_service, start_shop
from tests.support.tokens import SigningKeys

Metadata = tuple[tuple[str, str], ...]
ADMIN_EMAIL = "repeats-admin@cinema.test"
PASSWORD = "repeats-password"
CALLERS = 8  # concurrent tries in the race test; the services get as many workers


@dataclass
class Shop:
    casts: cast_pb2_grpc.CastServiceStub
    movies: movie_pb2_grpc.MovieServiceStub
    users: user_pb2_grpc.UserServiceStub
    orders: order_pb2_grpc.OrderServiceStub
    engines: dict[str, Engine]
    mailbox: Mailbox

    def count(self, service: str, sql: str, **params: object) -> int:
        with self.engines[service].connect() as connection:
            return int(connection.execute(text(sql), params).scalar_one())

    def login(self, email: str, password: str = PASSWORD) -> Metadata:
        token = self.users.Login(user_pb2.LoginRequest(email=email, password=password))
        return (("authorization", f"Bearer {token.access_token}"),)

    def register(self) -> tuple[str, str]:
        email = f"r-{uuid.uuid4().hex[:12]}@cinema.test"
        user = register(self.users, self.mailbox, email, PASSWORD, "Repeats")
        return user.id, email

    def movie(self, admin: Metadata, title: str = "Repeats") -> movie_pb2.Movie:
        price = money_pb2.Money(currency_code="EUR", amount_minor=500)
        return self.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie_pb2.Movie(title=title, price=price)),
            metadata=admin,
        )


@pytest.fixture(scope="module")
def shop(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Shop]:
    urls: dict[str, str] = {}

    def database(service: str) -> str:
        return urls.setdefault(service, databases(service))

    env = {**keys.env(), "CINEMA_WORKER_THREADS": str(CALLERS)}
    with start_shop(env, database, admin_email=ADMIN_EMAIL, admin_password=PASSWORD) as started:
        engines = {service: make_engine(url) for service, url in urls.items()}
        try:
            yield Shop(
                casts=cast_pb2_grpc.CastServiceStub(started.cast.channel()),
                movies=movie_pb2_grpc.MovieServiceStub(started.movie.channel()),
                users=user_pb2_grpc.UserServiceStub(started.user.channel()),
                orders=order_pb2_grpc.OrderServiceStub(started.order.channel()),
                engines=engines,
                mailbox=Mailbox(keys.mail_dir),
            )
        finally:
            for engine in engines.values():
                engine.dispose()


@pytest.fixture(scope="module")
def admin(shop: Shop) -> Metadata:
    return shop.login(ADMIN_EMAIL)


def call(metadata: Metadata, call_id: str) -> Metadata:
    """``metadata`` as the gateway sends one try of the client call ``call_id``."""
    return (*metadata, (CALL_ID_METADATA, call_id))


def new_call() -> str:
    return f"call-{uuid.uuid4().hex}"


def failure(rpc: Callable[..., object], *args: object, **kwargs: object) -> CallError:
    """The error of ``rpc(*args, **kwargs)``, which must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        rpc(*args, **kwargs)
    return call_error(raised.value)


def test_a_repeated_delete_answers_what_the_first_did(shop: Shop, admin: Metadata) -> None:
    movie = shop.movie(admin)
    cast = shop.casts.CreateCast(
        cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Repeated Delete")), metadata=admin
    )
    user_id, _ = shop.register()
    deletes: list[Callable[[Metadata], object]] = [
        lambda m: shop.movies.DeleteMovie(movie_pb2.DeleteMovieRequest(id=movie.id), metadata=m),
        lambda m: shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=cast.id), metadata=m),
        lambda m: shop.users.DeleteUser(user_pb2.DeleteUserRequest(id=user_id), metadata=m),
    ]
    for delete in deletes:
        call_id = new_call()
        delete(call(admin, call_id))
        delete(call(admin, call_id))  # the gateway's repeat: answered, not NOT_FOUND
        assert failure(delete, call(admin, new_call())).code is grpc.StatusCode.NOT_FOUND
    assert shop.count("movie", "SELECT count(*) FROM movies WHERE id = :id", id=movie.id) == 0


def test_a_repeated_update_answers_the_resource_as_it_is_and_overwrites_nothing(
    shop: Shop, admin: Metadata
) -> None:
    movie = shop.movie(admin, "Before")

    def rename(title: str, call_id: str) -> movie_pb2.Movie:
        return shop.movies.UpdateMovie(
            movie_pb2.UpdateMovieRequest(
                movie=movie_pb2.Movie(id=movie.id, title=title),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            ),
            metadata=call(admin, call_id),
        )

    first = new_call()
    assert rename("First", first).title == "First"
    assert rename("Second", new_call()).title == "Second"
    # A late repeat of the first call answers the movie as it is; it does not undo "Second".
    assert rename("First", first).title == "Second"
    got = shop.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie.id))
    assert got.title == "Second"


def test_a_repeated_cast_update_overwrites_nothing(shop: Shop, admin: Metadata) -> None:
    cast = shop.casts.CreateCast(
        cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Before")), metadata=admin
    )

    def rename(name: str, call_id: str) -> cast_pb2.Cast:
        return shop.casts.UpdateCast(
            cast_pb2.UpdateCastRequest(
                cast=cast_pb2.Cast(id=cast.id, name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=call(admin, call_id),
        )

    first = new_call()
    assert rename("First", first).name == "First"
    assert rename("Second", new_call()).name == "Second"
    assert rename("First", first).name == "Second"
    assert shop.casts.GetCast(cast_pb2.GetCastRequest(id=cast.id)).name == "Second"


def test_a_call_id_with_other_fields_or_from_someone_else_is_already_exists(
    shop: Shop, admin: Metadata, keys: SigningKeys
) -> None:
    movie = shop.movie(admin)
    other_movie = shop.movie(admin)
    call_id = new_call()

    def delete(metadata: Metadata, movie_id: str) -> object:
        return shop.movies.DeleteMovie(
            movie_pb2.DeleteMovieRequest(id=movie_id), metadata=call(metadata, call_id)
        )

    delete(admin, movie.id)
    another_admin = keys.metadata("another-admin", Role.ADMIN)
    for metadata, movie_id in ((admin, other_movie.id), (another_admin, movie.id)):
        reused = failure(delete, metadata, movie_id)
        assert (reused.code, reused.reason) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
    assert shop.count("movie", "SELECT count(*) FROM movies WHERE id = :id", id=other_movie.id)


def test_concurrent_tries_of_one_delete_all_answer_and_delete_once(
    shop: Shop, admin: Metadata
) -> None:
    movie = shop.movie(admin)
    call_id = new_call()
    deleted_before = shop.count(
        "movie", "SELECT count(*) FROM outbox WHERE subject LIKE '%MovieDeleted%'"
    )

    def delete(_: int) -> object:
        return shop.movies.DeleteMovie(
            movie_pb2.DeleteMovieRequest(id=movie.id), metadata=call(admin, call_id)
        )

    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(delete, range(CALLERS)))  # raises if any try failed
    assert shop.count("movie", "SELECT count(*) FROM handled_calls WHERE call_id = :c", c=call_id)
    after = shop.count("movie", "SELECT count(*) FROM outbox WHERE subject LIKE '%MovieDeleted%'")
    assert after - deleted_before == 1


def test_a_repeated_cancel_answers_the_cancelled_order(shop: Shop, admin: Metadata) -> None:
    movie = shop.movie(admin)
    _, email = shop.register()
    buyer = shop.login(email)
    order = shop.orders.CreateOrder(
        order_pb2.CreateOrderRequest(
            order=order_pb2.Order(items=[order_pb2.OrderItem(movie_id=movie.id, quantity=1)]),
            request_id=uuid.uuid4().hex,
        ),
        metadata=buyer,
    )
    call_id = new_call()

    def cancel(metadata: Metadata) -> order_pb2.Order:
        return shop.orders.CancelOrder(order_pb2.CancelOrderRequest(id=order.id), metadata=metadata)

    assert cancel(call(buyer, call_id)).status == order_pb2.ORDER_STATUS_CANCELLED
    assert cancel(call(buyer, call_id)).status == order_pb2.ORDER_STATUS_CANCELLED
    again = failure(cancel, call(buyer, new_call()))
    assert again.code is grpc.StatusCode.FAILED_PRECONDITION


def test_a_repeated_password_change_answers_the_account(shop: Shop) -> None:
    user_id, email = shop.register()
    owner = shop.login(email)
    call_id = new_call()

    def change(metadata: Metadata) -> user_pb2.User:
        return shop.users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(
                    id=user_id, password="a-new-password", current_password=PASSWORD
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["password"]),
            ),
            metadata=metadata,
        )

    assert change(call(owner, call_id)).id == user_id
    # The repeat's current_password is no longer the account's; it is answered all the same.
    assert change(call(owner, call_id)).id == user_id
    mismatch = failure(change, call(owner, new_call()))
    assert mismatch.reason == "CURRENT_PASSWORD_MISMATCH"
    shop.login(email, "a-new-password")


def _until_refused(rpc: Callable[[], Any], seconds: float = 5.0) -> CallError:
    """The error of ``rpc()`` once it is refused (a revocation takes an event to arrive)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            rpc()
        except grpc.RpcError as error:
            return call_error(error)
        assert time.monotonic() < deadline, "never refused"
        time.sleep(0.05)


@pytest.mark.parametrize("ending", ["Logout", "RevokeSession", "DeleteUser"])
def test_a_repeat_of_a_call_that_ended_its_own_session_is_answered(shop: Shop, ending: str) -> None:
    user_id, email = shop.register()
    login = shop.users.Login(user_pb2.LoginRequest(email=email, password=PASSWORD))
    owner: Metadata = (("authorization", f"Bearer {login.access_token}"),)
    rpcs: dict[str, Callable[[Metadata], object]] = {
        "Logout": lambda m: shop.users.Logout(user_pb2.LogoutRequest(), metadata=m),
        "RevokeSession": lambda m: shop.users.RevokeSession(
            user_pb2.RevokeSessionRequest(id=login.session_id), metadata=m
        ),
        "DeleteUser": lambda m: shop.users.DeleteUser(
            user_pb2.DeleteUserRequest(id=user_id), metadata=m
        ),
    }
    end = rpcs[ending]
    call_id = new_call()
    end(call(owner, call_id))
    # Once every replica knows the session ended, its token is refused...
    refused = _until_refused(
        lambda: shop.users.ListSessions(
            user_pb2.ListSessionsRequest(user_id=user_id), metadata=owner
        )
    )
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    # ...except for a repeat of the call that ended it, which is answered...
    end(call(owner, call_id))
    # ...and not for anything else under that token, nor another call of the same RPC.
    for other in (new_call(), ""):
        metadata = call(owner, other) if other else owner
        refused = failure(end, metadata)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "SESSION_REVOKED",
        )


def test_call_ids_older_than_an_hour_are_purged(shop: Shop) -> None:
    engine = shop.engines["cast"]
    now = dt.datetime.now(dt.UTC)
    old = handled_calls.Call(new_call(), "DeleteCast", "0" * 64)
    recent = handled_calls.Call(new_call(), "DeleteCast", "1" * 64)
    handled_calls._Purge.last = time.monotonic()  # no purge while the rows go in
    with engine.begin() as connection:
        store = handled_calls.HandledCalls(connection)
        store.claim(old, now - handled_calls.KEEP - dt.timedelta(minutes=1))
        store.claim(recent, now - dt.timedelta(minutes=59))
    handled_calls._Purge.last = float("-inf")  # the next claim purges
    with engine.begin() as connection:
        store = handled_calls.HandledCalls(connection)
        store.claim(handled_calls.Call(new_call(), "DeleteCast", "2" * 64), now)
        assert store.find(old.id) is None
        assert store.find(recent.id) == recent


def test_a_repeated_update_naming_cast_is_answered_with_the_cast_service_down(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    env = keys.env()
    admin = keys.metadata("admin-1", Role.ADMIN)
    cast = start_service("cast", service_settings("cast", databases("cast_down"), env))
    movie_env = {**env, "CAST_SERVICE_ADDR": cast.address}
    movie = start_service("movie", service_settings("movie", databases("movie_down"), movie_env))
    try:
        casts = cast_pb2_grpc.CastServiceStub(cast.channel())
        movies = movie_pb2_grpc.MovieServiceStub(movie.channel())
        cast_id = casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Peer")), metadata=admin
        ).id
        price = money_pb2.Money(currency_code="EUR", amount_minor=100)
        made = movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie_pb2.Movie(title="Peer", price=price)),
            metadata=admin,
        )
        request = movie_pb2.UpdateMovieRequest(
            movie=movie_pb2.Movie(id=made.id, cast_ids=[cast_id]),
            update_mask=field_mask_pb2.FieldMask(paths=["cast_ids"]),
        )
        call_id = new_call()
        assert list(movies.UpdateMovie(request, metadata=call(admin, call_id)).cast_ids) == [
            cast_id
        ]
        cast.stop()
        # The repeat's own cast check fails, but its first try committed: it is answered
        # from the record...
        again = movies.UpdateMovie(request, metadata=call(admin, call_id), timeout=10)
        assert list(again.cast_ids) == [cast_id]
        # ...where a new call cannot be.
        down = failure(movies.UpdateMovie, request, metadata=call(admin, new_call()), timeout=10)
        assert down.code is grpc.StatusCode.UNAVAILABLE
    finally:
        movie.stop()
        cast.stop()
