"""The fleet the fuzz tests attack: all four services, real and wired to each other.

Built like the integration tests' servers (``tests.support.servers``: each service from its
composition root on 127.0.0.1:0, a real database per service from the shared
``databases`` fixture, so once on SQLite and once on PostgreSQL), then seeded through the
API itself with a cast member, movies, a buyer and an order, so that fuzzed requests can
name things that exist. Every call the fixture makes is an ordinary client's call.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest

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
from services.common.context import Role
from tests.conftest import DatabaseFactory
from tests.fuzz.messages import Seeds
from tests.support.servers import RunningService, start_shop
from tests.support.tokens import SigningKeys

Metadata = tuple[tuple[str, str], ...]
_READ_ALL_METADATA = [
    ("grpc.max_metadata_size", 4 << 20),
    ("grpc.absolute_max_metadata_size", 4 << 20),
]
ADMIN_EMAIL = "fuzz-admin@example.com"
PASSWORD = "correct horse battery staple"


class ServerLog(logging.Handler):
    """Keeps the error records (with tracebacks) the in-process services log, so a failing
    call can show what the server said about it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._lock = threading.Lock()
        self._records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self._records.append(self.format(record))

    def mark(self) -> int:
        with self._lock:
            return len(self._records)

    def since(self, mark: int) -> str:
        with self._lock:
            return "\n".join(self._records[mark:]) or "(the services logged no error)"


@dataclass(frozen=True)
class Caller:
    """Who makes a fuzzed call: a name (what a failing example prints) and its metadata."""

    name: str
    metadata: Metadata


@dataclass
class Fleet:
    services: dict[str, RunningService]  # by full service name, cinema.v1.MovieService
    callers: tuple[Caller, ...]
    seeds: Seeds
    log: ServerLog
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def caller(self, name: str) -> Caller:
        return next(c for c in self.callers if c.name == name)

    def channel(self, service_name: str) -> grpc.Channel:
        """The fuzz's channel to a service: it reads every answer whole, trailers of any
        size, so that the test can weigh them itself (grpcio's own limits would drop an
        oversized answer at random between 8 and 16 KiB, and the run would not repeat)."""
        if service_name not in self.channels:
            self.channels[service_name] = grpc.insecure_channel(
                self.services[service_name].address, options=_READ_ALL_METADATA
            )
        return self.channels[service_name]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def _seed(
    keys: SigningKeys, services: dict[str, RunningService]
) -> tuple[Seeds, Metadata, Metadata]:
    """Real data made through the API; the ids, page tokens and emails it leaves, and the
    metadata of a real admin and a real buyer (tokens from Login, as a client gets them)."""
    channel = {name: running.channel() for name, running in services.items()}
    casts = cast_pb2_grpc.CastServiceStub(channel["cinema.v1.CastService"])
    movies = movie_pb2_grpc.MovieServiceStub(channel["cinema.v1.MovieService"])
    users = user_pb2_grpc.UserServiceStub(channel["cinema.v1.UserService"])
    orders = order_pb2_grpc.OrderServiceStub(channel["cinema.v1.OrderService"])

    def login(email: str) -> Metadata:
        reply = users.Login(user_pb2.LoginRequest(email=email, password=PASSWORD), timeout=10)
        return (("authorization", f"Bearer {reply.access_token}"),)

    admin = login(ADMIN_EMAIL)
    buyer_email = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
    buyer = users.CreateUser(
        user_pb2.CreateUserRequest(
            user=user_pb2.User(email=buyer_email, display_name="Buyer", password=PASSWORD)
        ),
        metadata=admin,
        timeout=10,
    )
    user = login(buyer_email)
    admin_id = next(
        u.id
        for u in users.ListUsers(user_pb2.ListUsersRequest(), metadata=admin).users
        if u.email == ADMIN_EMAIL
    )
    cast_ids = [
        casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name=name)), metadata=admin, timeout=10
        ).id
        for name in ("Sigourney Weaver", "Tom Skerritt")
    ]
    movie_ids = [
        movies.CreateMovie(
            movie_pb2.CreateMovieRequest(
                movie=movie_pb2.Movie(
                    title=title,
                    genres=["Horror"],
                    cast_ids=cast_ids,
                    price=money_pb2.Money(currency_code="USD", amount_minor=999),
                )
            ),
            metadata=admin,
            timeout=10,
        ).id
        for title in ("Alien", "Aliens", "Alien 3")
    ]
    order_ids = [
        orders.CreateOrder(
            order_pb2.CreateOrderRequest(
                order=order_pb2.Order(items=[order_pb2.OrderItem(movie_id=movie_id, quantity=1)]),
                request_id=uuid.uuid4().hex,
            ),
            metadata=who,
            timeout=10,
        ).id
        for movie_id, who in zip(movie_ids, (user, user, admin), strict=True)
    ]
    tokens = (
        movies.ListMovies(movie_pb2.ListMoviesRequest(page_size=1), timeout=10).next_page_token,
        movies.ListMovies(
            movie_pb2.ListMoviesRequest(page_size=1, genre="Horror"), timeout=10
        ).next_page_token,
        casts.ListCasts(cast_pb2.ListCastsRequest(page_size=1), timeout=10).next_page_token,
        users.ListUsers(
            user_pb2.ListUsersRequest(page_size=1), metadata=admin, timeout=10
        ).next_page_token,
        orders.ListOrders(
            order_pb2.ListOrdersRequest(page_size=1), metadata=user, timeout=10
        ).next_page_token,
    )
    seeds = Seeds(
        ids={
            "user": (admin_id, buyer.id),
            "cast": tuple(cast_ids),
            "movie": tuple(movie_ids),
            "order": tuple(order_ids),
        },
        page_tokens=tuple(t for t in tokens if t),
        emails=(ADMIN_EMAIL, buyer_email),
        password=PASSWORD,
    )
    for opened in channel.values():
        opened.close()
    return seeds, admin, user


@pytest.fixture(scope="module")
def fleet(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Fleet]:
    log = ServerLog()
    services_logger = logging.getLogger("services")
    services_logger.addHandler(log)
    try:
        with start_shop(
            keys.env(), databases, admin_email=ADMIN_EMAIL, admin_password=PASSWORD
        ) as shop:
            services = {s.server.spec.full_name: s for s in shop.started}
            seeds, admin, buyer = _seed(keys, services)
            callers = (
                Caller("admin", admin),
                Caller("buyer", buyer),
                Caller("anonymous", ()),
                # Signed by the right key, for a subject no user service knows.
                Caller("stranger-admin", keys.metadata("no-such-user", Role.ADMIN)),
                Caller("garbage-token", (("authorization", "Bearer not.a.jwt"),)),
                Caller("wrong-scheme", (("authorization", "Basic YWRtaW46YWRtaW4="),)),
            )
            fleet = Fleet(services, callers, seeds, log)
            yield fleet
            fleet.close()
    finally:
        services_logger.removeHandler(log)
