"""The order service over gRPC with real user and movie services, on SQLite and PostgreSQL.

Two order replicas share one database, so the idempotency and concurrency tests prove
that the database, not process memory, keeps an order or a charge from happening twice.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2

from cinema.v1 import (
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
from tests.support.errors import CallError, call_error
from tests.support.mail import Mailbox, register
from tests.support.processes import free_port
from tests.support.servers import RunningService, service_settings, start_service
from tests.support.tokens import SigningKeys

Metadata = tuple[tuple[str, str], ...]
PASSWORD = "correct horse battery staple"
VISA = "tok_visa"  # the test payment provider's token that always succeeds
PENDING = order_pb2.ORDER_STATUS_PENDING
PAID = order_pb2.ORDER_STATUS_PAID
PAYMENT_FAILED = order_pb2.ORDER_STATUS_PAYMENT_FAILED
CANCELLED = order_pb2.ORDER_STATUS_CANCELLED
SUCCEEDED = order_pb2.PAYMENT_OUTCOME_SUCCEEDED
DECLINED = order_pb2.PAYMENT_OUTCOME_DECLINED


@dataclass
class Buyer:
    id: str
    metadata: Metadata


@dataclass
class Shop:
    keys: SigningKeys
    env: dict[str, str]
    databases: DatabaseFactory
    order_url: str
    movie: RunningService
    user: RunningService
    replicas: list[RunningService]
    movies: movie_pb2_grpc.MovieServiceStub
    users: user_pb2_grpc.UserServiceStub
    orders: order_pb2_grpc.OrderServiceStub
    replica_stubs: list[order_pb2_grpc.OrderServiceStub]
    order_db: sa.Engine
    admin: Metadata

    def new_buyer(self) -> Buyer:
        email = f"buyer-{uuid.uuid4().hex[:12]}@example.com"
        # An admin's CreateUser makes the account at once (no mailed link).
        user = self.users.CreateUser(
            user_pb2.CreateUserRequest(
                user=user_pb2.User(email=email, display_name="Buyer", password=PASSWORD)
            ),
            metadata=self.admin,
        )
        return Buyer(user.id, self.keys.metadata(user.id))

    def new_movie(self, title: str, amount: int, currency: str = "USD") -> movie_pb2.Movie:
        movie = movie_pb2.Movie(
            title=title,
            plot="A plot.",
            price=money_pb2.Money(currency_code=currency, amount_minor=amount),
        )
        return self.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie), metadata=self.admin
        )

    def order_service(self, **env: str) -> RunningService:
        """Another order replica on the same database, with its own peer settings."""
        settings = service_settings(
            "order",
            self.order_url,
            {
                **self.env,
                "MOVIE_SERVICE_ADDR": self.movie.address,
                "USER_SERVICE_ADDR": self.user.address,
                **env,
            },
        )
        return start_service("order", settings, grace_seconds=1)

    def count(self, sql: str, **params: str) -> int:
        with self.order_db.connect() as connection:
            return int(connection.execute(sa.text(sql), params).scalar_one())

    def orders_of(self, buyer: Buyer) -> int:
        return self.count("SELECT count(*) FROM orders WHERE user_id = :u", u=buyer.id)


@pytest.fixture(scope="module")
def shop(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Shop]:
    env = keys.env()
    movie = start_service("movie", service_settings("movie", databases("movie"), env))
    user = start_service("user", service_settings("user", databases("user"), env))
    order_url = databases("order")
    order_env = {**env, "MOVIE_SERVICE_ADDR": movie.address, "USER_SERVICE_ADDR": user.address}
    replicas = [
        start_service("order", service_settings("order", order_url, order_env)) for _ in range(2)
    ]
    order_db = sa.create_engine(order_url)
    try:
        stubs = [order_pb2_grpc.OrderServiceStub(r.channel()) for r in replicas]
        yield Shop(
            keys=keys,
            env=env,
            databases=databases,
            order_url=order_url,
            movie=movie,
            user=user,
            replicas=replicas,
            movies=movie_pb2_grpc.MovieServiceStub(movie.channel()),
            users=user_pb2_grpc.UserServiceStub(user.channel()),
            orders=stubs[0],
            replica_stubs=stubs,
            order_db=order_db,
            admin=keys.metadata("admin-1", Role.ADMIN),
        )
    finally:
        order_db.dispose()
        for replica in replicas:
            replica.stop()
        user.stop()
        movie.stop()


@pytest.fixture(scope="module")
def catalogue(shop: Shop) -> dict[str, movie_pb2.Movie]:
    return {
        "alien": shop.new_movie("Alien", 999),
        "aliens": shop.new_movie("Aliens", 1500),
        "amelie": shop.new_movie("Amélie", 1200, "EUR"),
    }


def items(*pairs: tuple[movie_pb2.Movie, int]) -> list[order_pb2.OrderItem]:
    return [order_pb2.OrderItem(movie_id=m.id, quantity=q) for m, q in pairs]


def create(
    stub: order_pb2_grpc.OrderServiceStub,
    buyer: Buyer,
    lines: list[order_pb2.OrderItem],
    request_id: str | None = None,
    timeout: float = 30,
) -> order_pb2.Order:
    request = order_pb2.CreateOrderRequest(
        order=order_pb2.Order(items=lines), request_id=request_id or uuid.uuid4().hex
    )
    return stub.CreateOrder(request, metadata=buyer.metadata, timeout=timeout)


def pay(
    shop: Shop,
    order_id: str,
    metadata: Metadata,
    payment_token: str = VISA,
    request_id: str = "",
) -> order_pb2.Order:
    request = order_pb2.PayOrderRequest(
        id=order_id, payment_token=payment_token, request_id=request_id or uuid.uuid4().hex
    )
    return shop.orders.PayOrder(request, metadata=metadata, timeout=30)


def cancel(shop: Shop, order_id: str, metadata: Metadata) -> order_pb2.Order:
    request = order_pb2.CancelOrderRequest(id=order_id)
    return shop.orders.CancelOrder(request, metadata=metadata, timeout=30)


def get(shop: Shop, order_id: str, metadata: Metadata) -> order_pb2.Order:
    request = order_pb2.GetOrderRequest(id=order_id)
    return shop.orders.GetOrder(request, metadata=metadata, timeout=30)


def failure(call: Callable[[], object], code: grpc.StatusCode) -> CallError:
    """Run ``call``, assert it fails with ``code``, and return the error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = call_error(caught.value)
    assert error.code == code, error
    return error


# --- the buyer's story -----------------------------------------------------------------


def test_register_log_in_order_pay_and_list(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    email = f"story-{uuid.uuid4().hex[:8]}@example.com"
    register(shop.users, Mailbox(shop.keys.mail_dir), email, PASSWORD, "Story")
    token = shop.users.Login(user_pb2.LoginRequest(email=email, password=PASSWORD)).access_token
    metadata = (("authorization", f"Bearer {token}"),)

    order = shop.orders.CreateOrder(
        order_pb2.CreateOrderRequest(
            order=order_pb2.Order(items=items((catalogue["alien"], 1), (catalogue["aliens"], 1))),
            request_id="story-1",
        ),
        metadata=metadata,
    )
    assert order.status == PENDING and order.total.amount_minor == 2499

    paid = pay(shop, order.id, metadata, request_id="story-pay-1")
    assert paid.status == PAID

    listed = shop.orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=metadata).orders
    assert [o.id for o in listed] == [order.id]
    assert listed[0] == paid


# --- pricing and the snapshot ----------------------------------------------------------


def test_orders_are_priced_by_the_server_and_keep_their_snapshot(shop: Shop) -> None:
    buyer = shop.new_buyer()
    alien = shop.new_movie("Alien (snapshot)", 999)
    aliens = shop.new_movie("Aliens (snapshot)", 1500)
    # Prices sent by the client are output-only and ignored.
    lines = items((alien, 2), (aliens, 1))
    lines[0].unit_price.CopyFrom(money_pb2.Money(currency_code="USD", amount_minor=1))
    order = create(shop.orders, buyer, lines)

    assert order.user_id == buyer.id and order.status == PENDING
    assert [(i.movie_id, i.title, i.quantity) for i in order.items] == [
        (alien.id, "Alien (snapshot)", 2),
        (aliens.id, "Aliens (snapshot)", 1),
    ]
    assert [(i.unit_price.amount_minor, i.line_total.amount_minor) for i in order.items] == [
        (999, 1998),
        (1500, 1500),
    ]
    assert order.total == money_pb2.Money(currency_code="USD", amount_minor=3498)
    assert order.create_time.seconds > 0 and order.update_time == order.create_time
    assert list(order.payments) == []

    # The catalogue changes; the order does not.
    shop.movies.UpdateMovie(
        movie_pb2.UpdateMovieRequest(
            movie=movie_pb2.Movie(
                id=alien.id,
                title="Alien: Director's Cut",
                price=money_pb2.Money(currency_code="USD", amount_minor=4999),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["title", "price"]),
        ),
        metadata=shop.admin,
    )
    assert get(shop, order.id, buyer.metadata) == order
    # Paying charges the snapshot total.
    paid = pay(shop, order.id, buyer.metadata)
    assert paid.payments[0].amount.amount_minor == 3498
    # A deleted movie cancels unpaid orders only (MovieDeleted, tests/e2e/test_events.py):
    # a paid one keeps its lines.
    shop.movies.DeleteMovie(movie_pb2.DeleteMovieRequest(id=aliens.id), metadata=shop.admin)
    time.sleep(0.5)
    assert get(shop, order.id, buyer.metadata) == paid

    # A new order sees today's catalogue; the deleted movie is unknown.
    fresh = create(shop.orders, buyer, items((alien, 1)))
    assert (fresh.items[0].title, fresh.total.amount_minor) == ("Alien: Director's Cut", 4999)
    error = failure(
        lambda: create(shop.orders, buyer, items((alien, 1), (aliens, 1))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert error.reason == "UNKNOWN_MOVIE"
    assert "order.items[1].movie_id" in error.violations


def test_one_currency_per_order(shop: Shop, catalogue: dict[str, movie_pb2.Movie]) -> None:
    buyer = shop.new_buyer()
    error = failure(
        lambda: create(
            shop.orders,
            buyer,
            items((catalogue["alien"], 1), (catalogue["amelie"], 1), (catalogue["aliens"], 1)),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert error.reason == "MIXED_CURRENCIES"
    assert list(error.violations) == ["order.items[1]"]
    assert shop.orders_of(buyer) == 0
    euro = create(shop.orders, buyer, items((catalogue["amelie"], 3)))
    assert euro.total == money_pb2.Money(currency_code="EUR", amount_minor=3600)


def test_bad_orders_name_the_field(shop: Shop, catalogue: dict[str, movie_pb2.Movie]) -> None:
    buyer = shop.new_buyer()
    alien, aliens = catalogue["alien"], catalogue["aliens"]
    many = [order_pb2.OrderItem(movie_id=f"m{i}", quantity=1) for i in range(51)]
    cases: list[tuple[list[order_pb2.OrderItem], str, str]] = [
        ([], "r", "order.items"),
        (many, "r", "order.items"),
        (items((alien, 1), (aliens, 0)), "r", "order.items[1].quantity"),
        (items((alien, 101)), "r", "order.items[0].quantity"),
        (items((alien, -1)), "r", "order.items[0].quantity"),
        (items((alien, 1), (aliens, 1), (alien, 2)), "r", "order.items[2].movie_id"),
        ([order_pb2.OrderItem(movie_id="", quantity=1)], "r", "order.items[0].movie_id"),
        (items((alien, 1)), "", "request_id"),
        (items((alien, 1)), "x" * 101, "request_id"),
        (
            [*items((alien, 1), (aliens, 1)), order_pb2.OrderItem(movie_id="nope", quantity=1)],
            "r",
            "order.items[2].movie_id",
        ),
    ]
    for lines, request_id, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            shop.orders.CreateOrder(
                order_pb2.CreateOrderRequest(
                    order=order_pb2.Order(items=lines), request_id=request_id
                ),
                metadata=buyer.metadata,
            )
        error = call_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert field in error.violations, (field, error)
    # A request without an order at all.
    error = failure(
        lambda: shop.orders.CreateOrder(
            order_pb2.CreateOrderRequest(request_id="r"), metadata=buyer.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "order.items" in error.violations
    assert shop.orders_of(buyer) == 0


def test_the_buyer_must_have_an_account(shop: Shop, catalogue: dict[str, movie_pb2.Movie]) -> None:
    lines = items((catalogue["alien"], 1))
    failure(
        lambda: shop.orders.CreateOrder(
            order_pb2.CreateOrderRequest(order=order_pb2.Order(items=lines), request_id="r")
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    ghost = Buyer(uuid.uuid4().hex, shop.keys.metadata(uuid.uuid4().hex))
    error = failure(lambda: create(shop.orders, ghost, lines), grpc.StatusCode.PERMISSION_DENIED)
    assert error.reason == "BUYER_NOT_FOUND"

    gone = shop.new_buyer()
    shop.users.DeleteUser(user_pb2.DeleteUserRequest(id=gone.id), metadata=gone.metadata)
    error = failure(lambda: create(shop.orders, gone, lines), grpc.StatusCode.PERMISSION_DENIED)
    assert error.reason == "BUYER_NOT_FOUND"
    assert shop.orders_of(gone) == 0


# --- idempotency of CreateOrder --------------------------------------------------------


def test_create_order_is_idempotent_per_user(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer, other = shop.new_buyer(), shop.new_buyer()
    alien, aliens = catalogue["alien"], catalogue["aliens"]
    first = create(shop.replica_stubs[0], buyer, items((alien, 1), (aliens, 2)), "key-1")
    # Retried on the other replica, with the items listed the other way round.
    again = create(shop.replica_stubs[1], buyer, items((aliens, 2), (alien, 1)), "key-1")
    assert again == first
    error = failure(
        lambda: create(shop.orders, buyer, items((alien, 2)), "key-1"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert shop.orders_of(buyer) == 1
    # Keys belong to their user.
    others = create(shop.orders, other, items((alien, 2)), "key-1")
    assert others.id != first.id and others.user_id == other.id


def test_fifty_concurrent_creates_with_one_request_id_make_one_order(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer = shop.new_buyer()
    lines = items((catalogue["alien"], 1), (catalogue["aliens"], 1))
    start = threading.Barrier(50)

    def attempt(n: int) -> str:
        start.wait()
        return create(shop.replica_stubs[n % 2], buyer, lines, "same-key", timeout=120).id

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        ids = list(pool.map(attempt, range(50)))
    assert len(set(ids)) == 1
    assert shop.orders_of(buyer) == 1
    assert shop.count("SELECT count(*) FROM order_items WHERE order_id = :o", o=ids[0]) == 2


# --- payments and the state machine ----------------------------------------------------


def test_pending_to_paid(shop: Shop, catalogue: dict[str, movie_pb2.Movie]) -> None:
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 3)))
    paid = pay(shop, order.id, buyer.metadata, "tok_visa", "pay-1")
    assert paid.status == PAID
    assert len(paid.payments) == 1
    attempt = paid.payments[0]
    assert attempt.outcome == SUCCEEDED and attempt.decline_reason == ""
    assert attempt.amount == order.total and attempt.provider_reference
    assert attempt.id and attempt.create_time.seconds > 0
    assert paid.update_time.ToNanoseconds() >= order.update_time.ToNanoseconds()
    assert get(shop, order.id, buyer.metadata) == paid


def test_pending_to_failed_to_failed_to_paid(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 1)))
    failed = pay(shop, order.id, buyer.metadata, "tok_chargeDeclined")
    assert failed.status == PAYMENT_FAILED
    assert (failed.payments[-1].outcome, failed.payments[-1].decline_reason) == (
        DECLINED,
        "card_declined",
    )
    again = pay(shop, order.id, buyer.metadata, "tok_insufficientFunds")
    assert again.status == PAYMENT_FAILED
    assert again.payments[-1].decline_reason == "insufficient_funds"
    paid = pay(shop, order.id, buyer.metadata, "tok_visa")
    assert paid.status == PAID
    assert [p.outcome for p in paid.payments] == [DECLINED, DECLINED, SUCCEEDED]


@pytest.mark.parametrize("declined_first", [False, True], ids=["pending", "payment_failed"])
def test_cancel_and_then_nothing_more(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie], declined_first: bool
) -> None:
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 1)))
    if declined_first:
        assert pay(shop, order.id, buyer.metadata, "tok_chargeDeclined").status == PAYMENT_FAILED
    cancelled = cancel(shop, order.id, buyer.metadata)
    assert cancelled.status == CANCELLED

    error = failure(
        lambda: pay(shop, order.id, buyer.metadata), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error.reason == "ORDER_NOT_PAYABLE"
    error = failure(
        lambda: cancel(shop, order.id, buyer.metadata), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error.reason == "ORDER_NOT_CANCELLABLE"
    assert get(shop, order.id, buyer.metadata) == cancelled


def test_a_paid_order_is_never_charged_again_nor_cancelled(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 1)))
    paid = pay(shop, order.id, buyer.metadata, request_id="first")
    error = failure(
        lambda: pay(shop, order.id, buyer.metadata, request_id="second"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error.reason == "ORDER_ALREADY_PAID"
    error = failure(
        lambda: cancel(shop, order.id, buyer.metadata), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert error.reason == "ORDER_NOT_CANCELLABLE"
    assert get(shop, order.id, buyer.metadata) == paid
    assert shop.count("SELECT count(*) FROM payments WHERE order_id = :o", o=order.id) == 1


def test_pay_order_is_idempotent_per_request_id(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 1)))
    declined = pay(shop, order.id, buyer.metadata, "tok_chargeDeclined", "attempt-1")
    # The same attempt again, through the other replica: its first result, no new attempt.
    request = order_pb2.PayOrderRequest(
        id=order.id, payment_token="tok_chargeDeclined", request_id="attempt-1"
    )
    again = shop.replica_stubs[1].PayOrder(request, metadata=buyer.metadata)
    assert again == declined
    error = failure(
        lambda: pay(shop, order.id, buyer.metadata, "tok_visa", "attempt-1"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    paid = pay(shop, order.id, buyer.metadata, "tok_visa", "attempt-2")
    assert pay(shop, order.id, buyer.metadata, "tok_visa", "attempt-2") == paid
    payments = get(shop, order.id, buyer.metadata).payments
    assert [p.request_id for p in payments] == ["attempt-1", "attempt-2"]


def test_bad_payment_requests_change_nothing(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 1)))
    error = failure(
        lambda: pay(shop, order.id, buyer.metadata, "tok_unknown"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "payment_token" in error.violations
    error = failure(
        lambda: shop.orders.PayOrder(
            order_pb2.PayOrderRequest(id=order.id), metadata=buyer.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert {"payment_token", "request_id"} <= set(error.violations)
    failure(lambda: pay(shop, "no-such-order", buyer.metadata), grpc.StatusCode.NOT_FOUND)
    assert get(shop, order.id, buyer.metadata) == order


def test_twenty_concurrent_payments_charge_once(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 2)))
    start = threading.Barrier(20)

    def attempt(n: int) -> str:
        request = order_pb2.PayOrderRequest(
            id=order.id, payment_token="tok_visa", request_id=f"concurrent-{n}"
        )
        start.wait()
        try:
            shop.replica_stubs[n % 2].PayOrder(request, metadata=buyer.metadata, timeout=120)
        except grpc.RpcError as error:
            return call_error(error).reason
        return "OK"

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(attempt, range(20)))
    assert sorted(results) == ["OK"] + ["ORDER_ALREADY_PAID"] * 19
    stored = shop.count(
        "SELECT count(*) FROM payments WHERE order_id = :o AND outcome = 'SUCCEEDED'", o=order.id
    )
    assert stored == 1
    assert shop.count("SELECT count(*) FROM payments WHERE order_id = :o", o=order.id) == 1
    final = get(shop, order.id, buyer.metadata)
    assert final.status == PAID and [p.outcome for p in final.payments] == [SUCCEEDED]


@pytest.mark.parametrize(
    ("token", "status"), [(VISA, PAID), ("tok_chargeDeclined", PAYMENT_FAILED)]
)
def test_twenty_concurrent_retries_of_one_payment_answer_its_result(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie], token: str, status: int
) -> None:
    # The callers that wait for the order's row lock must see the payment the first one
    # recorded: a retry is answered, never refused as paid nor charged a second time.
    buyer = shop.new_buyer()
    order = create(shop.orders, buyer, items((catalogue["alien"], 2)))
    start = threading.Barrier(20)
    request = order_pb2.PayOrderRequest(id=order.id, payment_token=token, request_id="retried")

    def attempt(n: int) -> order_pb2.Order:
        start.wait()
        return shop.replica_stubs[n % 2].PayOrder(request, metadata=buyer.metadata, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(attempt, range(20)))
    assert all(result == results[0] for result in results)
    assert results[0].status == status and len(results[0].payments) == 1
    assert shop.count("SELECT count(*) FROM payments WHERE order_id = :o", o=order.id) == 1
    assert get(shop, order.id, buyer.metadata) == results[0]


# --- who sees what ---------------------------------------------------------------------


def test_a_user_cannot_see_pay_or_cancel_anothers_order(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    owner, intruder = shop.new_buyer(), shop.new_buyer()
    order = create(shop.orders, owner, items((catalogue["alien"], 1)))
    for call in (
        lambda: get(shop, order.id, intruder.metadata),
        lambda: pay(shop, order.id, intruder.metadata),
        lambda: cancel(shop, order.id, intruder.metadata),
    ):
        error = failure(call, grpc.StatusCode.NOT_FOUND)
        assert error.reason == "NOT_FOUND"
    listed = shop.orders.ListOrders(order_pb2.ListOrdersRequest(), metadata=intruder.metadata)
    assert list(listed.orders) == []
    failure(
        lambda: shop.orders.ListOrders(
            order_pb2.ListOrdersRequest(user_id=owner.id), metadata=intruder.metadata
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert get(shop, order.id, owner.metadata) == order
    assert get(shop, order.id, shop.admin) == order
    assert shop.count("SELECT count(*) FROM payments WHERE order_id = :o", o=order.id) == 0


def test_list_orders_newest_first_filtered_and_paged(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    buyer, other = shop.new_buyer(), shop.new_buyer()
    made = []
    for _ in range(5):
        made.append(create(shop.orders, buyer, items((catalogue["alien"], 1))).id)
        time.sleep(0.002)  # UUIDv7 orders by the millisecond
    theirs = create(shop.orders, other, items((catalogue["alien"], 1))).id
    pay(shop, made[1], buyer.metadata)
    pay(shop, made[3], buyer.metadata)

    def pages(request: order_pb2.ListOrdersRequest, metadata: Metadata) -> list[str]:
        seen: list[str] = []
        while True:
            page = shop.orders.ListOrders(request, metadata=metadata)
            assert len(page.orders) <= max(request.page_size, 1)
            seen += [o.id for o in page.orders]
            if not page.next_page_token:
                return seen
            request.page_token = page.next_page_token

    assert pages(order_pb2.ListOrdersRequest(page_size=2), buyer.metadata) == made[::-1]
    assert pages(order_pb2.ListOrdersRequest(page_size=1, status=PAID), buyer.metadata) == [
        made[3],
        made[1],
    ]
    assert pages(
        order_pb2.ListOrdersRequest(page_size=2, user_id=buyer.id, status=PENDING),
        buyer.metadata,
    ) == [made[4], made[2], made[0]]
    # An admin chooses the user, or sees everyone's.
    assert pages(order_pb2.ListOrdersRequest(user_id=other.id), shop.admin) == [theirs]
    everyone = pages(order_pb2.ListOrdersRequest(page_size=1000), shop.admin)
    assert set(made) | {theirs} <= set(everyone)
    assert everyone == sorted(everyone, reverse=True)

    first = shop.orders.ListOrders(
        order_pb2.ListOrdersRequest(page_size=2), metadata=buyer.metadata
    )
    error = failure(
        lambda: shop.orders.ListOrders(
            order_pb2.ListOrdersRequest(page_size=2, page_token=first.next_page_token, status=PAID),
            metadata=buyer.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in error.violations
    error = failure(
        lambda: shop.orders.ListOrders(
            order_pb2.ListOrdersRequest(status=99),  # type: ignore[arg-type]
            metadata=buyer.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "status" in error.violations


# --- peers down or slow ----------------------------------------------------------------


def test_movie_service_down_leaves_no_order(shop: Shop) -> None:
    movie = start_service(
        "movie", service_settings("movie", shop.databases("movie-down"), shop.env)
    )
    order = shop.order_service(MOVIE_SERVICE_ADDR=movie.address)
    try:
        movies = movie_pb2_grpc.MovieServiceStub(movie.channel())
        alien = movies.CreateMovie(
            movie_pb2.CreateMovieRequest(
                movie=movie_pb2.Movie(
                    title="Alien", price=money_pb2.Money(currency_code="USD", amount_minor=999)
                )
            ),
            metadata=shop.admin,
        )
        stub = order_pb2_grpc.OrderServiceStub(order.channel())
        buyer = shop.new_buyer()
        assert create(stub, buyer, items((alien, 1))).status == PENDING
        movie.stop()
        error = failure(lambda: create(stub, buyer, items((alien, 2))), grpc.StatusCode.UNAVAILABLE)
        assert error.reason == "PEER_UNAVAILABLE"
        assert shop.orders_of(buyer) == 1
    finally:
        order.stop()
        movie.stop()


def test_user_service_down_leaves_no_order(
    shop: Shop, catalogue: dict[str, movie_pb2.Movie]
) -> None:
    order = shop.order_service(USER_SERVICE_ADDR=f"127.0.0.1:{free_port()}")
    try:
        stub = order_pb2_grpc.OrderServiceStub(order.channel())
        buyer = shop.new_buyer()
        error = failure(
            lambda: create(stub, buyer, items((catalogue["alien"], 1))),
            grpc.StatusCode.UNAVAILABLE,
        )
        assert error.reason == "PEER_UNAVAILABLE"
        assert shop.orders_of(buyer) == 0
    finally:
        order.stop()


class SlowMovieService:
    """A movie service whose BatchGetMovies answers only after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def batch_get_movies(
        self, request: movie_pb2.BatchGetMoviesRequest, context: Any
    ) -> movie_pb2.BatchGetMoviesResponse:
        self.calls += 1
        time.sleep(self.delay)
        return movie_pb2.BatchGetMoviesResponse(
            movies=[
                movie_pb2.Movie(
                    id=movie_id,
                    title="Slow",
                    price=money_pb2.Money(currency_code="USD", amount_minor=100),
                )
                for movie_id in request.ids
            ]
        )


@pytest.fixture
def slow_movies() -> Iterator[tuple[str, SlowMovieService]]:
    servicer = SlowMovieService(delay=1.5)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "cinema.v1.MovieService",
        {
            "BatchGetMovies": grpc.unary_unary_rpc_method_handler(
                servicer.batch_get_movies,
                request_deserializer=movie_pb2.BatchGetMoviesRequest.FromString,
                response_serializer=movie_pb2.BatchGetMoviesResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


def test_slow_movie_service_is_deadline_exceeded_and_writes_nothing(
    shop: Shop, slow_movies: tuple[str, SlowMovieService]
) -> None:
    address, servicer = slow_movies
    # The order service's own ceiling on peer calls runs out first.
    order = shop.order_service(MOVIE_SERVICE_ADDR=address, CINEMA_PEER_TIMEOUT_SECONDS="0.3")
    try:
        stub = order_pb2_grpc.OrderServiceStub(order.channel())
        buyer = shop.new_buyer()
        lines = [order_pb2.OrderItem(movie_id="slow-1", quantity=1)]
        error = failure(lambda: create(stub, buyer, lines), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert error.reason == "PEER_DEADLINE_EXCEEDED"
        assert servicer.calls == 1
    finally:
        order.stop()
    # With a generous ceiling, the caller's own short deadline is passed on to the peer.
    order = shop.order_service(MOVIE_SERVICE_ADDR=address)
    try:
        stub = order_pb2_grpc.OrderServiceStub(order.channel())
        failure(lambda: create(stub, buyer, lines, timeout=0.5), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert servicer.calls == 2
        time.sleep(2 * servicer.delay)  # let any late answer arrive: still nothing written
        assert shop.orders_of(buyer) == 0
    finally:
        order.stop()
