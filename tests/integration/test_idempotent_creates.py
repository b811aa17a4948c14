"""CreateMovie, CreateCast and CreateUser are idempotent (AIP-155), on SQLite and on
PostgreSQL: a repeat with the client's ``request_id``, or the gateway's retry of one call
(the same ``x-cinema-call-id``), answers the first resource and stores no second one."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from cinema.v1 import (
    cast_pb2,
    cast_pb2_grpc,
    money_pb2,
    movie_pb2,
    movie_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from services.common import migrations
from services.common.context import CALL_ID_METADATA, Role
from services.common.db import make_engine
from tests.conftest import DatabaseFactory
from tests.support.errors import CallError, call_error
from tests.support.mail import Mailbox, wait_until_sent
from tests.support.servers import RunningService, service_settings, start_service
from tests.support.tokens import SigningKeys

Metadata = tuple[tuple[str, str], ...]
PASSWORD = "s3cret-Passw0rd"
CALLERS = 8  # concurrent callers in the race tests; the services get as many workers
REUSED = "IDEMPOTENCY_KEY_REUSED"
T = TypeVar("T")


@dataclass
class Shop:
    """The cast, movie and user services, their databases, and an admin's metadata."""

    casts: cast_pb2_grpc.CastServiceStub
    movies: movie_pb2_grpc.MovieServiceStub
    users: user_pb2_grpc.UserServiceStub
    engines: dict[str, Engine]
    admin: Metadata

    def count(self, service: str, sql: str, **params: object) -> int:
        """The number ``sql`` (a ``SELECT count(*)``) finds in ``service``'s database."""
        with self.engines[service].connect() as connection:
            return int(connection.execute(text(sql), params).scalar_one())


@pytest.fixture(scope="module")
def shop(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Shop]:
    env = {**keys.env(), "CINEMA_WORKER_THREADS": str(CALLERS)}
    urls = {service: databases(service) for service in ("cast", "movie", "user")}
    started: list[RunningService] = []
    engines = {service: make_engine(url) for service, url in urls.items()}
    try:
        cast = start_service("cast", service_settings("cast", urls["cast"], env))
        started.append(cast)
        movie_env = {**env, "CAST_SERVICE_ADDR": cast.address}
        movie = start_service("movie", service_settings("movie", urls["movie"], movie_env))
        started.append(movie)
        user = start_service("user", service_settings("user", urls["user"], env))
        started.append(user)
        yield Shop(
            casts=cast_pb2_grpc.CastServiceStub(cast.channel()),
            movies=movie_pb2_grpc.MovieServiceStub(movie.channel()),
            users=user_pb2_grpc.UserServiceStub(user.channel()),
            engines=engines,
            admin=keys.metadata("admin-1", Role.ADMIN),
        )
    finally:
        for service in reversed(started):
            service.stop()
        for engine in engines.values():
            engine.dispose()


def patiently(call: Callable[[], T]) -> T:
    """``call()``, again while the user service refuses password work beyond its limit
    (RESOURCE_EXHAUSTED, services/user/passwords.py), as a client would."""
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if call_error(error).code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
        time.sleep(0.01)


class Kind:
    """One create, told apart by ``label``: its resources' distinctive field."""

    name: str

    def __init__(self, shop: Shop) -> None:
        self.shop = shop

    def create(
        self, label: str, *, request_id: str = "", call_id: str = "", other: bool = False
    ) -> Any:
        """Create the resource ``label`` (``other``: with one field changed), with the
        given key(s); retried only on RESOURCE_EXHAUSTED."""
        metadata = self.metadata() + (((CALL_ID_METADATA, call_id),) if call_id else ())
        return patiently(lambda: self.call(label, request_id, other, metadata))

    def metadata(self) -> Metadata:
        return self.shop.admin

    def call(self, label: str, request_id: str, other: bool, metadata: Metadata) -> Any:
        raise NotImplementedError

    def stored(self, label: str) -> int:
        """How many resources ``label`` are in the database."""
        raise NotImplementedError


class Movies(Kind):
    name = "movie"

    def call(self, label: str, request_id: str, other: bool, metadata: Metadata) -> Any:
        movie = movie_pb2.Movie(
            title=label,
            plot="Another plot." if other else "In space.",
            genres=["sci-fi", "horror"],
            price=money_pb2.Money(currency_code="USD", amount_minor=999),
        )
        request = movie_pb2.CreateMovieRequest(movie=movie, request_id=request_id)
        return self.shop.movies.CreateMovie(request, metadata=metadata)

    def stored(self, label: str) -> int:
        return self.shop.count("movie", "SELECT count(*) FROM movies WHERE title = :t", t=label)


class Casts(Kind):
    name = "cast"

    def call(self, label: str, request_id: str, other: bool, metadata: Metadata) -> Any:
        cast = cast_pb2.Cast(name=label, nationality="French" if other else "American")
        request = cast_pb2.CreateCastRequest(cast=cast, request_id=request_id)
        return self.shop.casts.CreateCast(request, metadata=metadata)

    def stored(self, label: str) -> int:
        return self.shop.count("cast", "SELECT count(*) FROM casts WHERE name = :n", n=label)


class Users(Kind):
    name = "user"

    def metadata(self) -> Metadata:
        # An admin's CreateUser makes the account at once; anyone else's registers and
        # waits for its link (test_registration.py has the repeat of that).
        return self.shop.admin

    @staticmethod
    def email(label: str) -> str:
        return f"{label}@Idem.test"

    def call(self, label: str, request_id: str, other: bool, metadata: Metadata) -> Any:
        user = user_pb2.User(
            email=self.email(label),
            display_name="Another Name" if other else "Film Fan",
            password=PASSWORD,
        )
        request = user_pb2.CreateUserRequest(user=user, request_id=request_id)
        return self.shop.users.CreateUser(request, metadata=metadata)

    def stored(self, label: str) -> int:
        key = self.email(label).lower()
        return self.shop.count("user", "SELECT count(*) FROM users WHERE email_key = :k", k=key)


KINDS: dict[str, type[Kind]] = {"movie": Movies, "cast": Casts, "user": Users}


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest, shop: Shop) -> Kind:
    return KINDS[request.param](shop)


@pytest.fixture(params=["movie", "cast"])
def catalogue_kind(request: pytest.FixtureRequest, shop: Shop) -> Kind:
    """The creates without a unique field of their own: a second call makes a second one."""
    return KINDS[request.param](shop)


def unique(prefix: str = "idem") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def failure(call: Callable[[], object]) -> CallError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return call_error(caught.value)


# --- the client's request_id ---------------------------------------------------------------


def test_the_same_request_id_twice_makes_one_resource(kind: Kind) -> None:
    label, request_id = unique(), str(uuid.uuid4())
    first = kind.create(label, request_id=request_id)
    again = kind.create(label, request_id=request_id)
    assert again.id == first.id
    assert again == first, "the first resource, as it was stored"
    assert kind.stored(label) == 1


def test_the_same_request_id_with_other_fields_is_already_exists(kind: Kind) -> None:
    label, request_id = unique(), str(uuid.uuid4())
    first = kind.create(label, request_id=request_id)
    error = failure(lambda: kind.create(label, request_id=request_id, other=True))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS, error
    assert error.reason == REUSED
    assert request_id in error.message
    if kind.name == "user":
        assert first.id not in error.message, "anyone may register: no account id leaks"
    assert kind.stored(label) == 1


def test_a_client_retry_through_the_gateway_is_one_resource(kind: Kind) -> None:
    # Each attempt of the client is a new call for the gateway (a new call id); the
    # client's request_id is what ties them together.
    label, request_id = unique(), str(uuid.uuid4())
    first = kind.create(label, request_id=request_id, call_id=unique("call"))
    again = kind.create(label, request_id=request_id, call_id=unique("call"))
    assert again.id == first.id
    assert kind.stored(label) == 1


@pytest.mark.parametrize("request_id", ["   ", "x" * 101])
def test_a_bad_request_id_is_invalid_argument(kind: Kind, request_id: str) -> None:
    label = unique()
    error = failure(lambda: kind.create(label, request_id=request_id))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert set(error.violations) == {"request_id"}
    assert kind.stored(label) == 0


def test_concurrent_calls_with_one_request_id_store_one_resource(kind: Kind) -> None:
    label, request_id = unique(), str(uuid.uuid4())
    start = threading.Barrier(CALLERS)

    def attempt(_: int) -> str:
        start.wait()
        return str(kind.create(label, request_id=request_id).id)

    with ThreadPoolExecutor(CALLERS) as pool:
        ids = list(pool.map(attempt, range(CALLERS)))
    assert len(set(ids)) == 1, ids
    assert kind.stored(label) == 1


# --- the gateway's call id -----------------------------------------------------------------


def test_a_gateway_retry_of_one_call_makes_one_resource(kind: Kind) -> None:
    # What Envoy's retry of a create looks like: the same call id, no request_id.
    label, call_id = unique(), unique("call")
    first = kind.create(label, call_id=call_id)
    again = kind.create(label, call_id=call_id)
    assert again == first
    assert kind.stored(label) == 1


def test_concurrent_repeats_of_one_call_store_one_resource(kind: Kind) -> None:
    label, call_id = unique(), unique("call")
    start = threading.Barrier(CALLERS)

    def attempt(_: int) -> str:
        start.wait()
        return str(kind.create(label, call_id=call_id).id)

    with ThreadPoolExecutor(CALLERS) as pool:
        ids = list(pool.map(attempt, range(CALLERS)))
    assert len(set(ids)) == 1, ids
    assert kind.stored(label) == 1


# --- no key, or different keys -------------------------------------------------------------


def test_without_a_key_two_calls_make_two_resources(catalogue_kind: Kind) -> None:
    label = unique()
    first = catalogue_kind.create(label)
    second = catalogue_kind.create(label)
    third = catalogue_kind.create(label, call_id=unique("call"))
    fourth = catalogue_kind.create(label, call_id=unique("call"))
    assert len({first.id, second.id, third.id, fourth.id}) == 4
    assert catalogue_kind.stored(label) == 4


def test_a_request_id_never_matches_a_call_id(catalogue_kind: Kind) -> None:
    label, shared = unique(), unique("key")
    by_request = catalogue_kind.create(label, request_id=shared)
    by_call = catalogue_kind.create(label, call_id=shared)
    assert by_request.id != by_call.id
    assert catalogue_kind.stored(label) == 2


def test_without_a_key_a_repeated_registration_is_email_taken(shop: Shop) -> None:
    users = Users(shop)
    label = unique()
    users.create(label)
    error = failure(lambda: users.create(label))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    assert users.stored(label) == 1


# --- what a repeat does not do -------------------------------------------------------------


def test_a_repeated_create_movie_is_answered_before_the_cast_check(shop: Shop) -> None:
    cast = Casts(shop).create(unique())
    request_id = str(uuid.uuid4())
    movie = movie_pb2.Movie(
        title=unique(),
        cast_ids=[cast.id],
        price=money_pb2.Money(currency_code="EUR", amount_minor=500),
    )

    def create(key: str) -> movie_pb2.Movie:
        request = movie_pb2.CreateMovieRequest(movie=movie, request_id=key)
        return shop.movies.CreateMovie(request, metadata=shop.admin)

    first = create(request_id)
    shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=cast.id), metadata=shop.admin)
    # The repeat answers with the movie the first call made, as it stands now: the cast's
    # deletion event may already have taken the cast id off it (and moved update_time).
    again = create(request_id)
    assert (again.id, again.title, again.create_time) == (
        first.id,
        first.title,
        first.create_time,
    ), "the cast service is not asked again"
    error = failure(lambda: create(str(uuid.uuid4())))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, "a new create is checked"


def test_a_repeated_registration_with_another_password_keeps_the_first(
    shop: Shop, keys: SigningKeys
) -> None:
    # The fingerprint leaves the password out (it is stored in the clear), so a repeat
    # that changed only the password is the same request: the first account answers,
    # and its password stays the first one.
    request_id, email = str(uuid.uuid4()), f"{unique()}@idem.test"

    def register(password: str) -> user_pb2.User:
        user = user_pb2.User(email=email, display_name="Film Fan", password=password)
        request = user_pb2.CreateUserRequest(user=user, request_id=request_id)
        return patiently(lambda: shop.users.CreateUser(request))

    first = register(PASSWORD)
    assert register("another-password-1") == first
    mailbox = Mailbox(keys.mail_dir)
    wait_until_sent(shop.engines["user"])
    assert len(mailbox.messages(email)) == 1, "the repeat sent no second mail"
    link = user_pb2.VerifyEmailRequest(token=mailbox.token(email), password=PASSWORD)
    patiently(lambda: shop.users.VerifyEmail(link))

    def login(password: str) -> user_pb2.LoginResponse:
        request = user_pb2.LoginRequest(email=email, password=password)
        return patiently(lambda: shop.users.Login(request))

    assert login(PASSWORD).access_token
    error = failure(lambda: login("another-password-1"))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_deleted_resource_frees_its_key(shop: Shop) -> None:
    casts = Casts(shop)
    label, request_id = unique(), str(uuid.uuid4())
    first = casts.create(label, request_id=request_id)
    shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=first.id), metadata=shop.admin)
    again = casts.create(label, request_id=request_id)
    assert again.id != first.id
    assert casts.stored(label) == 1


# --- the migration -------------------------------------------------------------------------


TABLES = {"movie": "movies", "cast": "casts", "user": "users"}
OLD_ROWS = {
    "movie": "INSERT INTO movies (id, title, plot, genres, cast_ids, price_currency,"
    " price_amount_minor, create_time, update_time)"
    " VALUES ('m1', 'Old', '', '[]', '[]', 'USD', 1, :now, :now)",
    "cast": "INSERT INTO casts (id, name, nationality, create_time, update_time)"
    " VALUES ('c1', 'Old', NULL, :now, :now)",
    "user": "INSERT INTO users (id, email, email_key, display_name, role, password_hash,"
    " create_time, update_time) VALUES ('u1', 'old@x', 'old@x', 'Old', 'user', 'h', :now, :now)",
}


@pytest.mark.parametrize("service", sorted(TABLES))
def test_a_database_made_before_request_keys_is_migrated(
    databases: DatabaseFactory, service: str
) -> None:
    engine = make_engine(databases(f"{service}_0001"))
    table = TABLES[service]
    try:
        with engine.connect() as connection:
            command.upgrade(migrations.alembic_config(service, connection), "0001")
            connection.execute(text(OLD_ROWS[service]), {"now": "2026-01-01 00:00:00+00:00"})
            connection.commit()
        migrations.upgrade(engine, service)
        with engine.connect() as connection:
            keys = text(f"SELECT request_key, request_hash FROM {table}")  # noqa: S608
            assert connection.execute(keys).all() == [(None, None)], "old rows keep no key"
            indexes = {i["name"]: i for i in inspect(connection).get_indexes(table)}
        index = indexes[f"uq_{table}_request_key"]
        assert index["unique"] and index["column_names"] == ["request_key"]
    finally:
        engine.dispose()
