"""Who may call what: one table, one row per RPC, one column per kind of caller, run
against real servers on SQLite and on PostgreSQL.

Callers:

* ``anonymous``: no ``authorization`` metadata;
* ``user``: a user acting on their own account (for the catalogue, just any user);
* ``other``: another user, acting on the first user's account;
* ``admin``: the first admin, with the token of a real login;
* ``expired``, ``tampered``, ``wrong_audience``: admin-role tokens that must not work.
  They are refused with UNAUTHENTICATED by every RPC, the public ones included (a token
  that is sent must be valid), so they are one rule rather than three columns.

An outcome is ``OK`` (the call succeeds: every row sets up real resources, so an allowed
call is not merely "not refused" but answered) or the status code of the refusal.

The table is written out by hand on purpose: it states the rules of the issue, and it must
disagree with a wrong ``(cinema.v1.access)`` option in a proto, not copy it. A separate
test checks that every RPC of every service has exactly one row.

Orders are private: another user asking for someone's order by id gets NOT_FOUND, so
order ids cannot be probed; asking to list someone else's orders is PERMISSION_DENIED.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import importlib
import json
import pkgutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

import cinema.v1
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
from services.common.auth import TokenIssuer, TokenVerifier
from services.common.context import Role
from tests.conftest import DatabaseFactory
from tests.support.errors import call_error
from tests.support.mail import Mailbox, register
from tests.support.servers import start_shop
from tests.support.tokens import SigningKeys

Metadata = tuple[tuple[str, str], ...]
Outcome = grpc.StatusCode | None

OK: Outcome = None
UNAUTH: Outcome = grpc.StatusCode.UNAUTHENTICATED
DENIED: Outcome = grpc.StatusCode.PERMISSION_DENIED
HIDDEN: Outcome = grpc.StatusCode.NOT_FOUND

CALLERS = ("anonymous", "user", "other", "admin")
BAD_TOKENS = ("expired", "tampered", "wrong_audience")

COVERED = (
    "cinema.v1.MovieService",
    "cinema.v1.CastService",
    "cinema.v1.UserService",
    "cinema.v1.OrderService",
)

ADMIN_EMAIL = "matrix-admin@cinema.test"
PASSWORD = "matrix-password"


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    token: str

    @property
    def metadata(self) -> Metadata:
        return bearer(self.token)


# How a row asks for the caller's metadata: given the account the call acts on (its
# "owner"), the metadata of the caller under test.
As = Callable[[Account], Metadata]


@dataclass
class World:
    """Running services, accounts and catalogue entries the rows act on."""

    keys: SigningKeys
    users: user_pb2_grpc.UserServiceStub
    movies: movie_pb2_grpc.MovieServiceStub
    casts: cast_pb2_grpc.CastServiceStub
    orders: order_pb2_grpc.OrderServiceStub
    admin: Account
    owner: Account
    other: Account
    movie_id: str
    cast_id: str
    order_id: str

    def new_account(self) -> Account:
        """A freshly registered account with the token of its own login."""
        email = f"m-{uuid.uuid4().hex[:12]}@cinema.test"
        user = register(self.users, Mailbox(self.keys.mail_dir), email, PASSWORD, "Matrix")
        token = self.users.Login(user_pb2.LoginRequest(email=email, password=PASSWORD))
        return Account(user.id, email, token.access_token)

    def new_session(self) -> tuple[Account, user_pb2.LoginResponse]:
        """A fresh account and a second login of it (a session of its own)."""
        account = self.new_account()
        login = self.users.Login(user_pb2.LoginRequest(email=account.email, password=PASSWORD))
        return account, login

    def renew_sessions(self) -> None:
        """Log the admin and the other account in again (a row may have ended their
        sessions: Logout as them)."""
        for name in ("admin", "other"):
            account: Account = getattr(self, name)
            login = self.users.Login(user_pb2.LoginRequest(email=account.email, password=PASSWORD))
            setattr(self, name, Account(account.id, account.email, login.access_token))

    def new_movie(self) -> str:
        return self.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie()), metadata=self.admin.metadata
        ).id

    def new_cast(self) -> str:
        return self.casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Matrix Cast")),
            metadata=self.admin.metadata,
        ).id

    def new_order(self, buyer: Account) -> str:
        """A PENDING order of one copy of the world's movie, bought by ``buyer``."""
        request = order_pb2.CreateOrderRequest(
            order=order_pb2.Order(items=[order_pb2.OrderItem(movie_id=self.movie_id, quantity=1)]),
            request_id=uuid.uuid4().hex,
        )
        return self.orders.CreateOrder(request, metadata=buyer.metadata).id

    def caller(self, kind: str) -> As:
        """The metadata of ``kind`` of caller, for a call on ``owner``'s account."""

        def metadata(owner: Account) -> Metadata:
            if kind == "anonymous":
                return ()
            if kind == "user":
                return owner.metadata
            if kind == "other":
                return self.other.metadata
            if kind == "admin":
                return self.admin.metadata
            return bearer(self.bad_token(kind, owner))

        return metadata

    def bad_token(self, kind: str, owner: Account) -> str:
        """An admin-role token for ``owner`` that is wrong in the way ``kind`` says."""
        private_pem = self.keys.private_path.read_bytes()
        if kind == "expired":
            an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
            return self.keys.issuer.issue(owner.id, Role.ADMIN, now=an_hour_ago).token
        if kind == "wrong_audience":
            elsewhere = TokenIssuer(
                private_pem, issuer="cinema", audience="elsewhere", ttl_seconds=900
            )
            return elsewhere.issue(owner.id, Role.ADMIN).token
        if kind == "tampered":
            # The owner's own valid token, promoted to admin without a new signature.
            header, payload, signature = owner.token.split(".")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            claims["role"] = "admin"
            forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            return f"{header}.{forged}.{signature}"
        raise AssertionError(f"unknown bad token kind {kind!r}")


def movie() -> movie_pb2.Movie:
    return movie_pb2.Movie(
        title="Matrix", price=money_pb2.Money(currency_code="USD", amount_minor=100)
    )


# --- what each row sends -----------------------------------------------------------------


def create_movie(w: World, as_: As) -> object:
    return w.movies.CreateMovie(movie_pb2.CreateMovieRequest(movie=movie()), metadata=as_(w.owner))


def get_movie(w: World, as_: As) -> object:
    return w.movies.GetMovie(movie_pb2.GetMovieRequest(id=w.movie_id), metadata=as_(w.owner))


def list_movies(w: World, as_: As) -> object:
    return w.movies.ListMovies(movie_pb2.ListMoviesRequest(page_size=1), metadata=as_(w.owner))


def update_movie(w: World, as_: As) -> object:
    return w.movies.UpdateMovie(
        movie_pb2.UpdateMovieRequest(movie=movie_pb2.Movie(id=w.movie_id, title="Renamed")),
        metadata=as_(w.owner),
    )


def delete_movie(w: World, as_: As) -> object:
    request = movie_pb2.DeleteMovieRequest(id=w.new_movie())
    return w.movies.DeleteMovie(request, metadata=as_(w.owner))


def batch_get_movies(w: World, as_: As) -> object:
    request = movie_pb2.BatchGetMoviesRequest(ids=[w.movie_id])
    return w.movies.BatchGetMovies(request, metadata=as_(w.owner))


def create_cast(w: World, as_: As) -> object:
    request = cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="New"))
    return w.casts.CreateCast(request, metadata=as_(w.owner))


def get_cast(w: World, as_: As) -> object:
    return w.casts.GetCast(cast_pb2.GetCastRequest(id=w.cast_id), metadata=as_(w.owner))


def list_casts(w: World, as_: As) -> object:
    return w.casts.ListCasts(cast_pb2.ListCastsRequest(page_size=1), metadata=as_(w.owner))


def update_cast(w: World, as_: As) -> object:
    return w.casts.UpdateCast(
        cast_pb2.UpdateCastRequest(cast=cast_pb2.Cast(id=w.cast_id, name="Renamed")),
        metadata=as_(w.owner),
    )


def delete_cast(w: World, as_: As) -> object:
    request = cast_pb2.DeleteCastRequest(id=w.new_cast())
    return w.casts.DeleteCast(request, metadata=as_(w.owner))


def batch_get_casts(w: World, as_: As) -> object:
    request = cast_pb2.BatchGetCastsRequest(ids=[w.cast_id])
    return w.casts.BatchGetCasts(request, metadata=as_(w.owner))


def create_user(w: World, as_: As) -> object:
    email = f"new-{uuid.uuid4().hex[:12]}@cinema.test"
    user = user_pb2.User(email=email, display_name="New", password=PASSWORD)
    return w.users.CreateUser(user_pb2.CreateUserRequest(user=user), metadata=as_(w.owner))


def verify_email(w: World, as_: As) -> object:
    email = f"link-{uuid.uuid4().hex[:12]}@cinema.test"
    user = user_pb2.User(email=email, display_name="Linked", password=PASSWORD)
    w.users.CreateUser(user_pb2.CreateUserRequest(user=user))
    token = Mailbox(w.keys.mail_dir).token(email)
    request = user_pb2.VerifyEmailRequest(token=token, password=PASSWORD)
    return w.users.VerifyEmail(request, metadata=as_(w.owner))


def get_user(w: World, as_: As) -> object:
    return w.users.GetUser(user_pb2.GetUserRequest(id=w.owner.id), metadata=as_(w.owner))


def list_users(w: World, as_: As) -> object:
    return w.users.ListUsers(user_pb2.ListUsersRequest(page_size=1), metadata=as_(w.owner))


def update_user(w: World, as_: As) -> object:
    return w.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=w.owner.id, display_name="Renamed")),
        metadata=as_(w.owner),
    )


def delete_user(w: World, as_: As) -> object:
    target = w.new_account()  # a fresh account each time: an allowed call deletes it
    return w.users.DeleteUser(user_pb2.DeleteUserRequest(id=target.id), metadata=as_(target))


def login(w: World, as_: As) -> object:
    request = user_pb2.LoginRequest(email=w.owner.email, password=PASSWORD)
    return w.users.Login(request, metadata=as_(w.owner))


def list_owned_movies(w: World, as_: As) -> object:
    request = user_pb2.ListOwnedMoviesRequest(user_id=w.owner.id, page_size=1)
    return w.users.ListOwnedMovies(request, metadata=as_(w.owner))


def refresh_token(w: World, as_: As) -> object:
    target, login = w.new_session()
    request = user_pb2.RefreshTokenRequest(refresh_token=login.refresh_token)
    return w.users.RefreshToken(request, metadata=as_(target))


def logout(w: World, as_: As) -> object:
    target = w.new_account()
    try:
        return w.users.Logout(user_pb2.LogoutRequest(), metadata=as_(target))
    finally:
        w.renew_sessions()  # as "other" or "admin", their own session ended


def list_sessions(w: World, as_: As) -> object:
    request = user_pb2.ListSessionsRequest(user_id=w.owner.id, page_size=1)
    return w.users.ListSessions(request, metadata=as_(w.owner))


def revoke_session(w: World, as_: As) -> object:
    target, login = w.new_session()
    request = user_pb2.RevokeSessionRequest(id=login.session_id)
    return w.users.RevokeSession(request, metadata=as_(target))


def create_order(w: World, as_: As) -> object:
    request = order_pb2.CreateOrderRequest(
        order=order_pb2.Order(items=[order_pb2.OrderItem(movie_id=w.movie_id, quantity=1)]),
        request_id=uuid.uuid4().hex,
    )
    return w.orders.CreateOrder(request, metadata=as_(w.owner))


def get_order(w: World, as_: As) -> object:
    return w.orders.GetOrder(order_pb2.GetOrderRequest(id=w.order_id), metadata=as_(w.owner))


def list_orders(w: World, as_: As) -> object:
    request = order_pb2.ListOrdersRequest(user_id=w.owner.id, page_size=1)
    return w.orders.ListOrders(request, metadata=as_(w.owner))


def pay_order(w: World, as_: As) -> object:
    request = order_pb2.PayOrderRequest(
        id=w.new_order(w.owner), payment_token="tok_visa", request_id=uuid.uuid4().hex
    )
    return w.orders.PayOrder(request, metadata=as_(w.owner))


def cancel_order(w: World, as_: As) -> object:
    request = order_pb2.CancelOrderRequest(id=w.new_order(w.owner))
    return w.orders.CancelOrder(request, metadata=as_(w.owner))


# --- the matrix --------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    rpc: str
    anonymous: Outcome
    user: Outcome
    other: Outcome
    admin: Outcome
    call: Callable[[World, As], object]

    @property
    def method(self) -> str:
        return f"cinema.v1.{self.rpc}"

    def expected(self, caller: str) -> Outcome:
        if caller in BAD_TOKENS:
            return UNAUTH
        outcome: Outcome = getattr(self, caller)
        return outcome


# fmt: off
MATRIX = [
    #   RPC                             anonymous user    other   admin
    Row("MovieService/CreateMovie",     UNAUTH,   DENIED, DENIED, OK,   create_movie),
    Row("MovieService/GetMovie",        OK,       OK,     OK,     OK,   get_movie),
    Row("MovieService/ListMovies",      OK,       OK,     OK,     OK,   list_movies),
    Row("MovieService/UpdateMovie",     UNAUTH,   DENIED, DENIED, OK,   update_movie),
    Row("MovieService/DeleteMovie",     UNAUTH,   DENIED, DENIED, OK,   delete_movie),
    Row("MovieService/BatchGetMovies",  OK,       OK,     OK,     OK,   batch_get_movies),
    Row("CastService/CreateCast",       UNAUTH,   DENIED, DENIED, OK,   create_cast),
    Row("CastService/GetCast",          OK,       OK,     OK,     OK,   get_cast),
    Row("CastService/ListCasts",        OK,       OK,     OK,     OK,   list_casts),
    Row("CastService/UpdateCast",       UNAUTH,   DENIED, DENIED, OK,   update_cast),
    Row("CastService/DeleteCast",       UNAUTH,   DENIED, DENIED, OK,   delete_cast),
    Row("CastService/BatchGetCasts",    OK,       OK,     OK,     OK,   batch_get_casts),
    Row("UserService/CreateUser",       OK,       OK,     OK,     OK,   create_user),
    Row("UserService/VerifyEmail",      OK,       OK,     OK,     OK,   verify_email),
    Row("UserService/GetUser",          UNAUTH,   OK,     DENIED, OK,   get_user),
    Row("UserService/ListUsers",        UNAUTH,   DENIED, DENIED, OK,   list_users),
    Row("UserService/UpdateUser",       UNAUTH,   OK,     DENIED, OK,   update_user),
    Row("UserService/DeleteUser",       UNAUTH,   OK,     DENIED, OK,   delete_user),
    Row("UserService/Login",            OK,       OK,     OK,     OK,   login),
    Row("UserService/ListOwnedMovies",  UNAUTH,   OK,     DENIED, OK,   list_owned_movies),
    Row("UserService/RefreshToken",     OK,       OK,     OK,     OK,   refresh_token),
    Row("UserService/Logout",           UNAUTH,   OK,     OK,     OK,   logout),
    Row("UserService/ListSessions",     UNAUTH,   OK,     DENIED, OK,   list_sessions),
    Row("UserService/RevokeSession",    UNAUTH,   OK,     HIDDEN, OK,   revoke_session),
    Row("OrderService/CreateOrder",     UNAUTH,   OK,     OK,     OK,   create_order),
    Row("OrderService/GetOrder",        UNAUTH,   OK,     HIDDEN, OK,   get_order),
    Row("OrderService/ListOrders",      UNAUTH,   OK,     DENIED, OK,   list_orders),
    Row("OrderService/PayOrder",        UNAUTH,   OK,     HIDDEN, OK,   pay_order),
    Row("OrderService/CancelOrder",     UNAUTH,   OK,     HIDDEN, OK,   cancel_order),
]
# fmt: on


@pytest.fixture(scope="module")
def world(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[World]:
    env = keys.env()
    with start_shop(env, databases, admin_email=ADMIN_EMAIL, admin_password=PASSWORD) as shop:
        users = user_pb2_grpc.UserServiceStub(shop.user.channel())
        admin_token = users.Login(
            user_pb2.LoginRequest(email=ADMIN_EMAIL, password=PASSWORD)
        ).access_token
        verifier = TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")
        admin = Account(verifier.verify(admin_token).subject, ADMIN_EMAIL, admin_token)
        partial = World(
            keys=keys,
            users=users,
            movies=movie_pb2_grpc.MovieServiceStub(shop.movie.channel()),
            casts=cast_pb2_grpc.CastServiceStub(shop.cast.channel()),
            orders=order_pb2_grpc.OrderServiceStub(shop.order.channel()),
            admin=admin,
            owner=admin,
            other=admin,
            movie_id="",
            cast_id="",
            order_id="",
        )
        partial.owner = partial.new_account()
        partial.other = partial.new_account()
        partial.cast_id = partial.new_cast()
        partial.movie_id = partial.new_movie()
        partial.order_id = partial.new_order(partial.owner)
        yield partial


CASES = [
    pytest.param(row, caller, id=f"{row.rpc}-{caller}")
    for row in MATRIX
    for caller in (*CALLERS, *BAD_TOKENS)
]


@pytest.mark.parametrize(("row", "caller"), CASES)
def test_authorization_matrix(world: World, row: Row, caller: str) -> None:
    expected = row.expected(caller)
    call = functools.partial(row.call, world, world.caller(caller))
    if expected is OK:
        call()  # allowed means answered: any error fails the test
        return
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = call_error(caught.value)
    assert error.code == expected, f"{row.method} as {caller}: {error}"


def cinema_methods() -> dict[str, set[str]]:
    """Every cinema.v1 service in the generated code, with its RPCs (``Service/Method``)."""
    services: dict[str, set[str]] = {}
    for module_info in pkgutil.iter_modules(cinema.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"cinema.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = {
                f"{service.name}/{method.name}" for method in service.methods
            }
    return services


def test_every_rpc_of_the_covered_services_has_exactly_one_row() -> None:
    services = cinema_methods()
    assert set(services) == set(COVERED), "a cinema.v1 service has no rows in the matrix"
    rows = [row.rpc for row in MATRIX]
    assert len(rows) == len(set(rows)), "an RPC has two rows"
    expected = set().union(*(services[name] for name in COVERED))
    assert set(rows) == expected, (
        f"missing rows: {sorted(expected - set(rows))}; "
        f"rows for RPCs that do not exist: {sorted(set(rows) - expected)}"
    )
