"""Faults under load, through Envoy, on a system of its own (two replicas of everything).

* A replica of each service, in turn, is SIGKILLed while clients read and write: every call
  must still answer OK, and no create may be applied twice (Envoy retries reads and the
  creates that the services deduplicate: CreateMovie and CreateCast by the gateway's call
  id, CreateOrder and PayOrder by the client's request_id).
* A movie replica hangs (SIGSTOP) for a few seconds under reads: Envoy's per-try timeout
  and health checks must move the traffic to the other replica.

RefreshToken is in the load too (each worker refreshes its own session in turn): Envoy
repeats it, and the user service answers a repeat of the call that spent a token with new
tokens rather than ending the session as a reuse.

Updates, deletes, CancelOrder, Logout and RevokeSession are in the load too: Envoy repeats
them, and the services answer a repeat of one call from their record of it
(services/common/handled_calls.py) instead of NOT_FOUND, FAILED_PRECONDITION or a second
change. (Each worker logs in a few sessions before the load, one login at a time, to end
them during it: password checks beyond two at once per replica are refused, not queued.)

CreateUser (with a request_id), VerifyEmail and Login are in the load too, from one worker
only (:data:`REGISTRAR`), which registers accounts, follows the link in each one's mail and
logs in with it: one password check at a time, so the refusal above never meets the load.
A CreateUser that Envoy repeats after a kill must answer as the first try did, and a
repeated VerifyEmail the account the first one made, not an invalid token.

No PostgreSQL restart here: tests/support/postgres.py hands out fresh databases on a shared
server, and scripts/ensure-postgres starts one fixed server for everyone (port 55432);
restarting either would break the tests that other people run against it at the same time.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2

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
from tests.e2e.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    RunningSystem,
    start_system,
    stop_system,
)

#: A client deadline well above Envoy's per-try timeout (5 s): a call that meets a dead or
#: hung replica has time for Envoy's retry on the other one.
CALL_TIMEOUT = 10.0
WORKERS = 6
#: Load before the first kill, between kills, and after the last one.
WARM_UP_SECONDS = 1.0
KILL_EVERY_SECONDS = 1.75
TAIL_SECONDS = 2.0
SERVICES = ("movie", "cast", "user", "order")
#: How long a SIGSTOPped replica stays stopped.
HANG_SECONDS = 4.0
#: A call slower than this met the fault (a healthy call here takes milliseconds).
SLOW_SECONDS = 1.0
USER_PASSWORD = "faults-and-films-2026"  # test-only
#: Sessions each worker logs in before the kill load and logs out during it.
LOGOUTS_PER_WORKER = 2
#: The one worker that registers accounts and logs in with them during the kill load.
REGISTRAR = 0

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")


@dataclass
class Shop:
    """The fault tests' own system, with a buyer and a catalogue to read from."""

    system: RunningSystem
    admin: Metadata
    buyer: Metadata
    buyer_id: str
    buyer_email: str
    cast_id: str
    movie_id: str


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    system = start_system(tmp_path_factory.mktemp("cinema-faults"), replicas=2)
    try:
        admin = bearer(system.login(ADMIN_EMAIL, ADMIN_PASSWORD))
        with grpc.insecure_channel(system.address) as channel:
            email = f"buyer-{uuid.uuid4().hex[:8]}@cinema.test"
            buyer_id = (
                user_pb2_grpc.UserServiceStub(channel)
                .CreateUser(
                    user_pb2.CreateUserRequest(
                        user=user_pb2.User(
                            email=email, display_name="Buyer", password=USER_PASSWORD
                        )
                    ),
                    metadata=admin,
                    timeout=CALL_TIMEOUT,
                )
                .id
            )
            cast_id = (
                cast_pb2_grpc.CastServiceStub(channel)
                .CreateCast(
                    cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Seed")),
                    metadata=admin,
                    timeout=CALL_TIMEOUT,
                )
                .id
            )
            movie_id = (
                movie_pb2_grpc.MovieServiceStub(channel)
                .CreateMovie(
                    movie_pb2.CreateMovieRequest(movie=movie("Seed", cast_id)),
                    metadata=admin,
                    timeout=CALL_TIMEOUT,
                )
                .id
            )
        buyer = bearer(system.login(email, USER_PASSWORD))
        yield Shop(system, admin, buyer, buyer_id, email, cast_id, movie_id)
    finally:
        if system.process.poll() is None:
            survivors = stop_system(system)
            assert survivors == [], f"cinema up left processes behind: {survivors}"


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def movie(title: str, cast_id: str) -> movie_pb2.Movie:
    return movie_pb2.Movie(
        title=title,
        cast_ids=[cast_id],
        price=money_pb2.Money(currency_code="USD", amount_minor=499),
    )


@dataclass
class Tally:
    """What one client thread saw: outcomes and slowest answer per RPC, first failures."""

    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    slowest: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    #: Calls slower than :data:`SLOW_SECONDS`, per RPC: those that met the fault.
    slow: Counter[str] = field(default_factory=Counter)

    def call(self, rpc: str, invoke: Callable[[], T]) -> T | None:
        began = time.monotonic()
        try:
            result = invoke()
        except grpc.RpcError as error:
            code = error.code().name
            if len(self.failures) < 20:
                self.failures.append(f"{rpc} {code}: {error.details()}")
            result, outcome = None, code
        else:
            outcome = "OK"
        elapsed = time.monotonic() - began
        self.outcomes.setdefault(rpc, Counter())[outcome] += 1
        self.slowest[rpc] = max(self.slowest.get(rpc, 0.0), elapsed)
        if elapsed > SLOW_SECONDS:
            self.slow[rpc] += 1
        return result

    def merge(self, other: Tally) -> None:
        for rpc, counts in other.outcomes.items():
            self.outcomes.setdefault(rpc, Counter()).update(counts)
        for rpc, seconds in other.slowest.items():
            self.slowest[rpc] = max(self.slowest.get(rpc, 0.0), seconds)
        self.failures += other.failures
        self.slow.update(other.slow)

    def total(self, outcome: str | None = None) -> int:
        return sum(
            count
            for counts in self.outcomes.values()
            for code, count in counts.items()
            if outcome is None or code == outcome
        )

    def failed(self) -> dict[str, dict[str, int]]:
        return {
            rpc: {code: n for code, n in counts.items() if code != "OK"}
            for rpc, counts in self.outcomes.items()
            if set(counts) != {"OK"}
        }

    def summary(self) -> str:
        slowest = max(self.slowest.values(), default=0.0)
        return (
            f"{self.total()} calls, {self.total() - self.total('OK')} failed, "
            f"max latency {slowest:.2f}s, {sum(self.slow.values())} over {SLOW_SECONDS:.0f}s; "
            f"per RPC {dict(self.outcomes)}; "
            f"slowest { ({rpc: round(s, 2) for rpc, s in self.slowest.items()}) }"
        )


@dataclass
class Created:
    """Ids the servers answered for the creates that succeeded in one client thread."""

    movies: list[str] = field(default_factory=list)
    casts: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    paid: list[str] = field(default_factory=list)
    #: Of the above, the ones this thread then deleted or cancelled.
    deleted_movies: list[str] = field(default_factory=list)
    deleted_casts: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    #: The title each renamed movie was given last.
    titles: dict[str, str] = field(default_factory=dict)
    #: Accounts registered (id to email), and those that then logged in.
    users: dict[str, str] = field(default_factory=dict)
    logged_in: list[str] = field(default_factory=list)


def run_load(
    seconds: float, worker: Callable[[int, float], Tally], faults: Callable[[], None]
) -> Tally:
    """``WORKERS`` threads run ``worker(index, stop_at)`` while ``faults()`` runs here."""
    stop_at = time.monotonic() + seconds
    tally = Tally()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(worker, index, stop_at) for index in range(WORKERS)]
        try:
            faults()
        finally:
            for future in futures:
                tally.merge(future.result(timeout=seconds + 3 * CALL_TIMEOUT))
    return tally


def wait_until_whole(system: RunningSystem, killed: set[int], timeout: float = 30) -> None:
    """Until every replica runs again (none of ``killed`` among them) and /healthz is 200."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {pid for service in SERVICES for pid in system.pids(f"{service}-")}
        reply = system.request("GET", "/healthz")
        if reply.status == 200 and len(pids) == 2 * len(SERVICES) and not pids & killed:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not whole again: /healthz {reply.status} {reply.body}")
        time.sleep(0.3)


def all_movies(movies: movie_pb2_grpc.MovieServiceStub) -> list[movie_pb2.Movie]:
    found: list[movie_pb2.Movie] = []
    token = ""
    while True:
        page = movies.ListMovies(
            movie_pb2.ListMoviesRequest(page_size=1000, page_token=token), timeout=CALL_TIMEOUT
        )
        found += page.movies
        if not (token := page.next_page_token):
            return found


def all_casts(casts: cast_pb2_grpc.CastServiceStub) -> list[cast_pb2.Cast]:
    found: list[cast_pb2.Cast] = []
    token = ""
    while True:
        page = casts.ListCasts(
            cast_pb2.ListCastsRequest(page_size=1000, page_token=token), timeout=CALL_TIMEOUT
        )
        found += page.casts
        if not (token := page.next_page_token):
            return found


def all_orders(orders: order_pb2_grpc.OrderServiceStub, buyer: Metadata) -> list[order_pb2.Order]:
    found: list[order_pb2.Order] = []
    token = ""
    while True:
        page = orders.ListOrders(
            order_pb2.ListOrdersRequest(page_size=1000, page_token=token),
            metadata=buyer,
            timeout=CALL_TIMEOUT,
        )
        found += page.orders
        if not (token := page.next_page_token):
            return found


def test_kill_one_replica_of_each_service_during_mixed_reads_and_writes(shop: Shop) -> None:
    system = shop.system
    prefix = f"fault-{uuid.uuid4().hex[:8]}-"
    created: list[Created] = [Created() for _ in range(WORKERS)]
    seconds = WARM_UP_SECONDS + KILL_EVERY_SECONDS * (len(SERVICES) - 1) + TAIL_SECONDS
    killed: set[int] = set()
    with grpc.insecure_channel(system.address) as channel:
        movies = movie_pb2_grpc.MovieServiceStub(channel)
        casts = cast_pb2_grpc.CastServiceStub(channel)
        users = user_pb2_grpc.UserServiceStub(channel)
        orders = order_pb2_grpc.OrderServiceStub(channel)
        # Each worker's own session, refreshed in turn: a refresh token is good for one
        # exchange, so a RefreshToken lost to a kill and not repeated by Envoy would fail,
        # and repeated by the client would end the session as a reuse. (Logged in one by
        # one: password checks at once are refused, not queued.)
        sessions = [
            users.Login(
                user_pb2.LoginRequest(email=shop.buyer_email, password=USER_PASSWORD),
                timeout=CALL_TIMEOUT,
            ).refresh_token
            for _ in range(WORKERS)
        ]
        # Sessions each worker logs out, and sessions it revokes by id (as the buyer, from
        # the buyer's own session), during the load.
        to_log_out = [
            [
                bearer(system.login(shop.buyer_email, USER_PASSWORD))
                for _ in range(LOGOUTS_PER_WORKER)
            ]
            for _ in range(WORKERS)
        ]
        to_revoke = [
            [
                users.Login(
                    user_pb2.LoginRequest(email=shop.buyer_email, password=USER_PASSWORD),
                    timeout=CALL_TIMEOUT,
                ).session_id
                for _ in range(LOGOUTS_PER_WORKER)
            ]
            for _ in range(WORKERS)
        ]

        def worker(index: int, stop_at: float) -> Tally:
            tally, mine = Tally(), created[index]
            numbers = itertools.count()

            def create_movie() -> None:
                title = f"{prefix}movie-{index}-{next(numbers)}"
                request = movie_pb2.CreateMovieRequest(movie=movie(title, shop.cast_id))
                made = tally.call(
                    "CreateMovie",
                    lambda: movies.CreateMovie(request, metadata=shop.admin, timeout=CALL_TIMEOUT),
                )
                if made is not None:
                    mine.movies.append(made.id)

            def create_cast() -> None:
                name = f"{prefix}cast-{index}-{next(numbers)}"
                request = cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name=name))
                made = tally.call(
                    "CreateCast",
                    lambda: casts.CreateCast(request, metadata=shop.admin, timeout=CALL_TIMEOUT),
                )
                if made is not None:
                    mine.casts.append(made.id)

            def buy() -> None:
                request = order_pb2.CreateOrderRequest(
                    order=order_pb2.Order(
                        items=[order_pb2.OrderItem(movie_id=shop.movie_id, quantity=1)]
                    ),
                    request_id=str(uuid.uuid4()),
                )
                order = tally.call(
                    "CreateOrder",
                    lambda: orders.CreateOrder(request, metadata=shop.buyer, timeout=CALL_TIMEOUT),
                )
                if order is None:
                    return
                mine.orders.append(order.id)
                pay = order_pb2.PayOrderRequest(
                    id=order.id, payment_token="tok_visa", request_id=f"pay-{order.id}"
                )
                paid = tally.call(
                    "PayOrder",
                    lambda: orders.PayOrder(pay, metadata=shop.buyer, timeout=CALL_TIMEOUT),
                )
                if paid is not None:
                    mine.paid.append(paid.id)

            def register_and_log_in() -> None:
                email = f"{prefix}user-{index}-{next(numbers)}@cinema.test"
                request = user_pb2.CreateUserRequest(
                    user=user_pb2.User(email=email, display_name="Fault", password=USER_PASSWORD),
                    request_id=str(uuid.uuid4()),
                )
                if not tally.call(
                    "CreateUser", lambda: users.CreateUser(request, timeout=CALL_TIMEOUT)
                ):
                    return
                token = shop.system.mailbox.token(email)
                link = user_pb2.VerifyEmailRequest(token=token, password=USER_PASSWORD)
                user = tally.call(
                    "VerifyEmail", lambda: users.VerifyEmail(link, timeout=CALL_TIMEOUT)
                )
                if user is None:
                    return
                mine.users[user.id] = email
                login = user_pb2.LoginRequest(email=email, password=USER_PASSWORD)
                if tally.call("Login", lambda: users.Login(login, timeout=CALL_TIMEOUT)):
                    mine.logged_in.append(user.id)

            def refresh() -> None:
                request = user_pb2.RefreshTokenRequest(refresh_token=sessions[index])
                grant = tally.call(
                    "RefreshToken", lambda: users.RefreshToken(request, timeout=CALL_TIMEOUT)
                )
                if grant is not None:
                    sessions[index] = grant.refresh_token

            turns: Counter[str] = Counter()

            def every_other(what: str) -> bool:
                """True, then False, and so on, for each ``what`` on its own."""
                turns[what] += 1
                return turns[what] % 2 == 1

            # fmt: off
            def change_movie() -> None:
                live = [m for m in mine.movies if m not in mine.deleted_movies]
                if len(live) < 2:
                    return create_movie()
                if every_other("movie"):
                    title = f"{prefix}movie-{index}-{next(numbers)}-renamed"
                    rename = movie_pb2.UpdateMovieRequest(
                        movie=movie_pb2.Movie(id=live[-1], title=title),
                        update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                    )
                    if tally.call("UpdateMovie", lambda: movies.UpdateMovie(
                            rename, metadata=shop.admin, timeout=CALL_TIMEOUT)) is not None:
                        mine.titles[live[-1]] = title
                    return None
                delete = movie_pb2.DeleteMovieRequest(id=live[0])
                if tally.call("DeleteMovie", lambda: movies.DeleteMovie(
                        delete, metadata=shop.admin, timeout=CALL_TIMEOUT)) is not None:
                    mine.deleted_movies.append(live[0])
                return None

            def change_cast() -> None:
                live = [c for c in mine.casts if c not in mine.deleted_casts]
                if len(live) < 2:
                    return create_cast()
                if every_other("cast"):
                    change = cast_pb2.UpdateCastRequest(
                        cast=cast_pb2.Cast(id=live[-1], nationality="Danish"),
                        update_mask=field_mask_pb2.FieldMask(paths=["nationality"]),
                    )
                    tally.call("UpdateCast", lambda: casts.UpdateCast(
                        change, metadata=shop.admin, timeout=CALL_TIMEOUT))
                    return None
                delete = cast_pb2.DeleteCastRequest(id=live[0])
                if tally.call("DeleteCast", lambda: casts.DeleteCast(
                        delete, metadata=shop.admin, timeout=CALL_TIMEOUT)) is not None:
                    mine.deleted_casts.append(live[0])
                return None

            def buy_and_cancel() -> None:
                order = tally.call("CreateOrder", lambda: orders.CreateOrder(
                    order_pb2.CreateOrderRequest(
                        order=order_pb2.Order(
                            items=[order_pb2.OrderItem(movie_id=shop.movie_id, quantity=1)]
                        ),
                        request_id=str(uuid.uuid4()),
                    ),
                    metadata=shop.buyer, timeout=CALL_TIMEOUT))
                if order is None:
                    return
                mine.orders.append(order.id)
                cancel = order_pb2.CancelOrderRequest(id=order.id)
                if tally.call("CancelOrder", lambda: orders.CancelOrder(
                        cancel, metadata=shop.buyer, timeout=CALL_TIMEOUT)) is not None:
                    mine.cancelled.append(order.id)

            def rename_buyer_or_end_a_session() -> None:
                if to_log_out[index] and every_other("user"):
                    session = to_log_out[index].pop()
                    tally.call("Logout", lambda: users.Logout(
                        user_pb2.LogoutRequest(), metadata=session, timeout=CALL_TIMEOUT))
                    return
                if to_revoke[index] and every_other("revoke"):
                    revoke = user_pb2.RevokeSessionRequest(id=to_revoke[index].pop())
                    tally.call("RevokeSession", lambda: users.RevokeSession(
                        revoke, metadata=shop.buyer, timeout=CALL_TIMEOUT))
                    return
                rename = user_pb2.UpdateUserRequest(
                    user=user_pb2.User(id=shop.buyer_id, display_name=f"Buyer {index}"),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                )
                tally.call("UpdateUser", lambda: users.UpdateUser(
                    rename, metadata=shop.buyer, timeout=CALL_TIMEOUT))
            # fmt: on

            calls: list[Callable[[], object]] = [
                lambda: tally.call("GetMovie", lambda: movies.GetMovie(
                    movie_pb2.GetMovieRequest(id=shop.movie_id, view=movie_pb2.MOVIE_VIEW_FULL),
                    timeout=CALL_TIMEOUT)),
                lambda: tally.call("ListMovies", lambda: movies.ListMovies(
                    movie_pb2.ListMoviesRequest(page_size=5), timeout=CALL_TIMEOUT)),
                lambda: tally.call("GetCast", lambda: casts.GetCast(
                    cast_pb2.GetCastRequest(id=shop.cast_id), timeout=CALL_TIMEOUT)),
                lambda: tally.call("GetUser", lambda: users.GetUser(
                    user_pb2.GetUserRequest(id=shop.buyer_id), metadata=shop.buyer,
                    timeout=CALL_TIMEOUT)),
                create_movie,
                create_cast,
                buy,
                refresh,
                change_movie,
                change_cast,
                buy_and_cancel,
                rename_buyer_or_end_a_session,
            ]  # fmt: skip
            if index == REGISTRAR:
                calls.append(register_and_log_in)
            for turn in itertools.count(index):
                if time.monotonic() >= stop_at:
                    return tally
                calls[turn % len(calls)]()
            raise AssertionError("unreachable")

        def kill_each_service_in_turn() -> None:
            time.sleep(WARM_UP_SECONDS)
            for number, service in enumerate(SERVICES):
                if number:
                    time.sleep(KILL_EVERY_SECONDS)
                victim = system.pids(f"{service}-1")[0]
                os.kill(victim, signal.SIGKILL)
                killed.add(victim)

        tally = run_load(seconds, worker, kill_each_service_in_turn)
        print(f"\nkill -9 under mixed load: {tally.summary()}")
        assert tally.total("OK") > 100, tally.summary()
        assert tally.failed() == {}, f"{tally.failed()}; first: {tally.failures}"

        wait_until_whole(system, killed)
        stored_movies = [(m.id, m.title) for m in all_movies(movies)]
        stored_casts = [(c.id, c.name) for c in all_casts(casts)]
        stored_orders = all_orders(orders, shop.buyer)
        registered = {i: e for c in created for i, e in c.users.items()}
        stored_users = {
            i: users.GetUser(
                user_pb2.GetUserRequest(id=i), metadata=shop.admin, timeout=CALL_TIMEOUT
            ).email
            for i in registered
        }

    deleted = {i for c in created for i in c.deleted_movies + c.deleted_casts}
    made_movies = [i for c in created for i in c.movies if i not in deleted]
    made_casts = [i for c in created for i in c.casts if i not in deleted]
    assert deleted, "the load deleted nothing"
    made_orders = [i for c in created for i in c.orders]
    paid = {i for c in created for i in c.paid}
    assert made_movies and made_casts and paid, "the load made no writes"
    for what, made, stored in (
        ("movies", made_movies, stored_movies),
        ("casts", made_casts, stored_casts),
    ):
        # A create applied twice is a second row with the same title: the prefix finds it.
        ours = Counter(i for i, name in stored if name.startswith(prefix))
        assert len(set(made)) == len(made), f"two calls answered the same {what} id"
        assert sorted(ours) == sorted(made), f"{what}: stored {len(ours)}, created {len(made)}"
        assert set(ours.values()) == {1}, f"{what} stored twice: {ours}"
    assert sorted(o.id for o in stored_orders) == sorted(made_orders)
    titles = {i: t for c in created for i, t in c.titles.items() if i not in deleted}
    assert titles, "the load renamed nothing"
    assert {i: t for i, t in stored_movies if i in titles} == titles
    cancelled = {i for c in created for i in c.cancelled}
    assert cancelled, "the load cancelled nothing"
    # A VerifyEmail applied twice would have failed its repeat (an invalid token, its
    # address taken); each account answered is stored with its own email, once, and it
    # could log in.
    assert registered and created[REGISTRAR].logged_in, "the load registered nobody"
    assert stored_users == registered
    assert sorted(created[REGISTRAR].logged_in) == sorted(registered)
    for order in stored_orders:
        if order.id in cancelled:
            assert order.status == order_pb2.ORDER_STATUS_CANCELLED, order
        if order.id in paid:
            assert order.status == order_pb2.ORDER_STATUS_PAID, order
            assert len(order.payments) == 1, f"order {order.id} charged {len(order.payments)}x"


def test_a_hung_movie_replica_does_not_fail_reads(shop: Shop) -> None:
    system = shop.system
    with grpc.insecure_channel(system.address) as channel:
        movies = movie_pb2_grpc.MovieServiceStub(channel)
        request = movie_pb2.GetMovieRequest(id=shop.movie_id)

        def worker(index: int, stop_at: float) -> Tally:
            tally = Tally()
            while time.monotonic() < stop_at:
                tally.call("GetMovie", lambda: movies.GetMovie(request, timeout=CALL_TIMEOUT))
            return tally

        def hang_one_replica() -> None:
            time.sleep(WARM_UP_SECONDS)
            victim = system.pids("movie-2")[0]
            os.kill(victim, signal.SIGSTOP)
            try:
                time.sleep(HANG_SECONDS)
            finally:
                os.kill(victim, signal.SIGCONT)

        tally = run_load(WARM_UP_SECONDS + HANG_SECONDS + TAIL_SECONDS, worker, hang_one_replica)
    print(f"\nSIGSTOP of movie-2 under reads: {tally.summary()}")
    assert tally.total("OK") > 100, tally.summary()
    assert tally.failed() == {}, f"{tally.failed()}; first: {tally.failures}"
    wait_until_whole(system, set())
