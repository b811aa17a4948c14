"""Order use cases with fakes for the database, the peers and the payment provider.

The fake unit of work keeps committed orders in a dict and works on a copy, so a use case
that fails before ``commit`` leaves nothing behind, as a real transaction does. The real
database, constraints and locks are covered by tests/integration/test_orders.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Self

import pytest

from services.common.context import Principal, RequestContext, Role
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.common.handled_calls import HandledCalls
from services.common.money import Money
from services.order.domain import (
    REASON_ALREADY_PAID,
    REASON_KEY_REUSED,
    REASON_NOT_CANCELLABLE,
    REASON_NOT_PAYABLE,
    CatalogueMovie,
    ItemRequest,
    Order,
    OrderStatus,
    Payment,
    PaymentOutcome,
)
from services.order.payments import ChargeResult, TestPaymentProvider
from services.order.repository import DuplicateOrderRequest
from services.order.service import REASON_BUYER_NOT_FOUND, UNPAID, OrderService
from tests.unit.fake_events import MemoryInbox, RecordingOutbox

# --- fakes -------------------------------------------------------------------------------


class FakeOrderRepository:
    def __init__(self, orders: dict[str, Order]) -> None:
        self.orders = orders

    def add(self, order: Order) -> None:
        if any(
            o.user_id == order.user_id and o.request_id == order.request_id
            for o in self.orders.values()
        ):
            raise DuplicateOrderRequest(order.user_id, order.request_id)
        self.orders[order.id] = order

    def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        return self.orders.get(order_id)

    def find_by_request(self, user_id: str, request_id: str) -> Order | None:
        return next(
            (o for o in self.orders.values() if (o.user_id, o.request_id) == (user_id, request_id)),
            None,
        )

    def list_page(
        self, before_id: str | None, limit: int, *, user_id: str | None, status: OrderStatus | None
    ) -> list[Order]:
        found = sorted(self.orders.values(), key=lambda o: o.id, reverse=True)
        return [
            o
            for o in found
            if (before_id is None or o.id < before_id)
            and (user_id is None or o.user_id == user_id)
            and (status is None or o.status is status)
        ][:limit]

    def add_payment(self, order_id: str, payment: Payment) -> None:
        order = self.orders[order_id]
        self.orders[order_id] = dataclasses.replace(order, payments=(*order.payments, payment))

    def save_status(self, order: Order) -> None:
        stored = self.orders[order.id]
        self.orders[order.id] = dataclasses.replace(
            stored, status=order.status, update_time=order.update_time
        )

    def unpaid_of_user(self, user_id: str) -> list[str]:
        return [o.id for o in self.orders.values() if o.user_id == user_id and o.status in UNPAID]

    def unpaid_with_movie(self, movie_id: str) -> list[str]:
        return [
            o.id
            for o in self.orders.values()
            if o.status in UNPAID and any(line.movie_id == movie_id for line in o.lines)
        ]


class FakeDatabase:
    def __init__(self) -> None:
        self.committed: dict[str, Order] = {}
        self.buried: set[tuple[str, str]] = set()

    def uow(self, read_only: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)


class MemoryTombstones:
    """Ids buried by the consumer, kept by the fake database (no locks: one thread)."""

    def __init__(self, buried: set[tuple[str, str]]) -> None:
        self._buried = buried

    def bury(self, kind: str, resource_id: str, now: dt.datetime) -> None:
        self._buried.add((kind, resource_id))

    def buried(self, wanted: Mapping[str, Collection[str]]) -> set[tuple[str, str]]:
        return {(k, i) for k, ids in wanted.items() for i in ids if (k, i) in self._buried}


class FakeUnitOfWork:
    #: Never set: these tests make no call through the gateway (no call id), so nothing
    #: is recorded (services/common/handled_calls.py; tests/integration/test_repeated_calls.py).
    calls: HandledCalls

    def __init__(self, database: FakeDatabase) -> None:
        self._database = database
        self.orders = FakeOrderRepository({})
        self.outbox = RecordingOutbox()
        self.inbox = MemoryInbox()
        self.tombstones = MemoryTombstones(database.buried)

    def __enter__(self) -> Self:
        self.orders = FakeOrderRepository(dict(self._database.committed))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pass

    def commit(self) -> None:
        self._database.committed = dict(self.orders.orders)


class FakeUsers:
    def __init__(self, *existing: str) -> None:
        self.existing = set(existing)
        self.calls = 0
        self.error: Exception | None = None

    def exists(self, user_id: str, context: RequestContext) -> bool:
        self.calls += 1
        if self.error:
            raise self.error
        return user_id in self.existing


class FakeMovies:
    def __init__(self, *movies: CatalogueMovie) -> None:
        self.movies = {m.id: m for m in movies}
        self.calls: list[list[str]] = []
        self.error: Exception | None = None
        self.during_call: Callable[[], None] = lambda: None

    def get_many(self, movie_ids: Sequence[str], context: RequestContext) -> list[CatalogueMovie]:
        self.calls.append(list(movie_ids))
        self.during_call()
        if self.error:
            raise self.error
        return [self.movies[i] for i in movie_ids if i in self.movies]


class CountingProvider:
    def __init__(self) -> None:
        self.inner = TestPaymentProvider()
        self.charges: list[tuple[Money, str, str]] = []

    def charge(self, amount: Money, token: str, idempotency_key: str) -> ChargeResult:
        self.charges.append((amount, token, idempotency_key))
        return self.inner.charge(amount, token, idempotency_key)


ALIEN = CatalogueMovie("m1", "Alien", Money("USD", 999))
ALIENS = CatalogueMovie("m2", "Aliens", Money("USD", 1500))
AMELIE = CatalogueMovie("m3", "Amélie", Money("EUR", 1200))


@dataclasses.dataclass
class Shop:
    database: FakeDatabase
    users: FakeUsers
    movies: FakeMovies
    provider: CountingProvider
    service: OrderService

    def stored(self) -> list[Order]:
        return list(self.database.committed.values())


@pytest.fixture
def shop() -> Shop:
    database = FakeDatabase()
    users = FakeUsers("alice", "bob")
    movies = FakeMovies(ALIEN, ALIENS, AMELIE)
    provider = CountingProvider()
    ticks = itertools.count()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def clock() -> dt.datetime:
        return start + dt.timedelta(seconds=next(ticks))

    service = OrderService(database.uow, users, movies, provider, clock)
    return Shop(database, users, movies, provider, service)


def as_user(subject: str, role: Role = Role.USER) -> RequestContext:
    return RequestContext(principal=Principal(subject, role), bearer_token="token-" + subject)


ALICE = as_user("alice")
BOB = as_user("bob")
ADMIN = as_user("root", Role.ADMIN)
TWO_ITEMS = [ItemRequest("m1", 2), ItemRequest("m2", 1)]


def new_order(shop: Shop, request_id: str = "r1", context: RequestContext = ALICE) -> Order:
    return shop.service.create_order(TWO_ITEMS, request_id, context)


# --- CreateOrder -----------------------------------------------------------------------


def test_create_prices_from_one_catalogue_call(shop: Shop) -> None:
    order = new_order(shop)
    assert shop.movies.calls == [["m1", "m2"]]
    assert shop.users.calls == 1
    assert order.user_id == "alice"
    assert order.status is OrderStatus.PENDING
    assert order.total == Money("USD", 2 * 999 + 1500)
    assert [(line.title, line.unit_price.amount_minor) for line in order.lines] == [
        ("Alien", 999),
        ("Aliens", 1500),
    ]
    assert shop.stored() == [order]


def test_a_retry_answers_the_first_order_without_asking_peers(shop: Shop) -> None:
    first = new_order(shop)
    shop.movies.movies.clear()  # even with the movies gone, a retry still answers
    again = shop.service.create_order(list(reversed(TWO_ITEMS)), "r1", ALICE)
    assert again == first
    assert len(shop.movies.calls) == 1 and shop.users.calls == 1
    assert len(shop.stored()) == 1


def test_a_reused_key_with_other_items_is_already_exists(shop: Shop) -> None:
    first = new_order(shop)
    with pytest.raises(AlreadyExists) as caught:
        shop.service.create_order([ItemRequest("m1", 3)], "r1", ALICE)
    assert caught.value.reason == REASON_KEY_REUSED
    assert caught.value.metadata["order_id"] == first.id
    assert shop.stored() == [first]


def test_request_ids_are_per_user(shop: Shop) -> None:
    alices = new_order(shop, "same")
    bobs = new_order(shop, "same", BOB)
    assert alices.id != bobs.id and bobs.user_id == "bob"


def test_losing_a_race_answers_the_winners_order(shop: Shop) -> None:
    winner: list[Order] = []

    def another_replica_commits_first() -> None:
        shop.movies.during_call = lambda: None
        winner.append(shop.service.create_order(TWO_ITEMS, "r1", ALICE))

    shop.movies.during_call = another_replica_commits_first
    assert shop.service.create_order(TWO_ITEMS, "r1", ALICE) == winner[0]
    assert shop.stored() == winner


def test_losing_a_race_to_other_content_is_already_exists(shop: Shop) -> None:
    def another_replica_commits_first() -> None:
        shop.movies.during_call = lambda: None
        shop.service.create_order([ItemRequest("m1", 1)], "r1", ALICE)

    shop.movies.during_call = another_replica_commits_first
    with pytest.raises(AlreadyExists):
        shop.service.create_order(TWO_ITEMS, "r1", ALICE)
    assert len(shop.stored()) == 1


def test_a_buyer_without_an_account_is_refused(shop: Shop) -> None:
    with pytest.raises(PermissionDenied) as caught:
        new_order(shop, context=as_user("ghost"))
    assert caught.value.reason == REASON_BUYER_NOT_FOUND
    assert shop.movies.calls == []
    assert shop.stored() == []


def test_a_buyer_deleted_after_the_user_service_said_yes_is_refused(shop: Shop) -> None:
    # The user service still knows alice (FakeUsers), but the consumer has applied her
    # UserDeleted in the meantime: the order must not commit unseen by its scan.
    with shop.database.uow() as uow:
        shop.service.forget_user(uow, "alice")
        uow.commit()
    with pytest.raises(PermissionDenied) as caught:
        new_order(shop)
    assert caught.value.reason == REASON_BUYER_NOT_FOUND
    assert shop.stored() == []


def test_a_movie_deleted_after_the_catalogue_said_yes_is_unknown(shop: Shop) -> None:
    with shop.database.uow() as uow:
        shop.service.forget_movie(uow, "m2")
        uow.commit()
    with pytest.raises(InvalidArgument) as caught:
        new_order(shop)  # m1 and m2; the catalogue still prices both
    assert [v.field for v in caught.value.violations] == ["order.items[1].movie_id"]
    assert shop.stored() == []


@pytest.mark.parametrize("peer", ["users", "movies"])
def test_a_failing_peer_writes_nothing(shop: Shop, peer: str) -> None:
    getattr(shop, peer).error = Unavailable("down", reason="PEER_UNAVAILABLE")
    with pytest.raises(Unavailable):
        new_order(shop)
    assert shop.stored() == []


def test_bad_input_is_refused_before_any_peer_is_asked(shop: Shop) -> None:
    with pytest.raises(InvalidArgument) as caught:
        shop.service.create_order([ItemRequest("m1", 0), ItemRequest("m1", 1)], "", ALICE)
    assert {v.field for v in caught.value.violations} == {
        "request_id",
        "order.items[0].quantity",
        "order.items[1].movie_id",
    }
    assert shop.users.calls == 0 and shop.movies.calls == []


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([ItemRequest("m1", 1), ItemRequest("zzz", 1)], "order.items[1].movie_id"),
        ([ItemRequest("m1", 1), ItemRequest("m3", 1)], "order.items[1]"),
    ],
)
def test_unknown_movies_and_mixed_currencies_write_nothing(
    shop: Shop, items: list[ItemRequest], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        shop.service.create_order(items, "r1", ALICE)
    assert [v.field for v in caught.value.violations] == [field]
    assert shop.stored() == []


# --- GetOrder, ListOrders --------------------------------------------------------------


def test_someone_elses_order_is_not_found_but_an_admin_sees_it(shop: Shop) -> None:
    order = new_order(shop)
    assert shop.service.get_order(order.id, ALICE) == order
    assert shop.service.get_order(order.id, ADMIN) == order
    refused: list[Callable[[], object]] = [
        lambda: shop.service.get_order(order.id, BOB),
        lambda: shop.service.pay_order(order.id, "tok_visa", "p1", BOB),
        lambda: shop.service.cancel_order(order.id, BOB),
        lambda: shop.service.get_order("missing", ALICE),
    ]
    for call in refused:
        with pytest.raises(NotFound):
            call()
    assert shop.provider.charges == []
    assert shop.service.get_order(order.id, ALICE).status is OrderStatus.PENDING


def test_list_is_own_orders_newest_first_and_pages(shop: Shop) -> None:
    made = [new_order(shop, f"r{i}").id for i in range(5)]
    new_order(shop, "b", BOB)
    seen: list[str] = []
    token = ""
    while True:
        page = shop.service.list_orders(2, token, user_id="", status=None, context=ALICE)
        seen += [o.id for o in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(made, reverse=True)
    # A token is bound to its filters.
    first = shop.service.list_orders(2, "", user_id="", status=None, context=ALICE)
    with pytest.raises(InvalidArgument):
        shop.service.list_orders(
            2, first.next_page_token, user_id="", status=OrderStatus.PAID, context=ALICE
        )


def test_list_filters_by_user_for_an_admin_only(shop: Shop) -> None:
    alices = new_order(shop)
    bobs = new_order(shop, "b", BOB)
    with pytest.raises(PermissionDenied):
        shop.service.list_orders(0, "", user_id="bob", status=None, context=ALICE)
    own = shop.service.list_orders(0, "", user_id="alice", status=None, context=ALICE)
    assert [o.id for o in own.items] == [alices.id]
    everyone = shop.service.list_orders(0, "", user_id="", status=None, context=ADMIN)
    assert {o.id for o in everyone.items} == {alices.id, bobs.id}
    just_bob = shop.service.list_orders(0, "", user_id="bob", status=None, context=ADMIN)
    assert [o.id for o in just_bob.items] == [bobs.id]


def test_list_filters_by_status(shop: Shop) -> None:
    paid = new_order(shop, "a")
    shop.service.pay_order(paid.id, "tok_visa", "p", ALICE)
    pending = new_order(shop, "b")
    found = shop.service.list_orders(0, "", user_id="", status=OrderStatus.PAID, context=ALICE)
    assert [o.id for o in found.items] == [paid.id]
    found = shop.service.list_orders(0, "", user_id="", status=OrderStatus.PENDING, context=ALICE)
    assert [o.id for o in found.items] == [pending.id]


# --- PayOrder, CancelOrder -------------------------------------------------------------


def test_a_successful_payment_is_recorded_and_charged_once(shop: Shop) -> None:
    order = new_order(shop)
    paid = shop.service.pay_order(order.id, "tok_visa", "p1", ALICE)
    assert paid.status is OrderStatus.PAID
    assert [(p.outcome, p.amount) for p in paid.payments] == [
        (PaymentOutcome.SUCCEEDED, order.total)
    ]
    assert shop.provider.charges == [(order.total, "tok_visa", f"{order.id}:p1")]
    assert shop.service.get_order(order.id, ALICE) == paid

    # The same request again: the order as it is, no second charge.
    assert shop.service.pay_order(order.id, "tok_visa", "p1", ALICE) == paid
    # A new request on a paid order: refused, no charge, nothing recorded.
    with pytest.raises(FailedPrecondition) as caught:
        shop.service.pay_order(order.id, "tok_visa", "p2", ALICE)
    assert caught.value.reason == REASON_ALREADY_PAID
    assert len(shop.provider.charges) == 1
    assert shop.service.get_order(order.id, ALICE) == paid


def test_declines_then_success(shop: Shop) -> None:
    order = new_order(shop)
    failed = shop.service.pay_order(order.id, "tok_chargeDeclined", "p1", ALICE)
    assert failed.status is OrderStatus.PAYMENT_FAILED
    assert failed.payments[-1].decline_reason == "card_declined"
    again = shop.service.pay_order(order.id, "tok_insufficientFunds", "p2", ALICE)
    assert again.status is OrderStatus.PAYMENT_FAILED
    # A retry of the declined attempt does not try again.
    assert shop.service.pay_order(order.id, "tok_insufficientFunds", "p2", ALICE) == again
    paid = shop.service.pay_order(order.id, "tok_visa", "p3", ALICE)
    assert paid.status is OrderStatus.PAID
    assert [p.outcome for p in paid.payments] == [
        PaymentOutcome.DECLINED,
        PaymentOutcome.DECLINED,
        PaymentOutcome.SUCCEEDED,
    ]
    assert len(shop.provider.charges) == 3


def test_a_reused_payment_key_with_another_token_is_already_exists(shop: Shop) -> None:
    order = new_order(shop)
    shop.service.pay_order(order.id, "tok_chargeDeclined", "p1", ALICE)
    with pytest.raises(AlreadyExists) as caught:
        shop.service.pay_order(order.id, "tok_visa", "p1", ALICE)
    assert caught.value.reason == REASON_KEY_REUSED
    assert len(shop.provider.charges) == 1


def test_an_unknown_token_records_nothing(shop: Shop) -> None:
    order = new_order(shop)
    with pytest.raises(InvalidArgument) as caught:
        shop.service.pay_order(order.id, "tok_bogus", "p1", ALICE)
    assert [v.field for v in caught.value.violations] == ["payment_token"]
    assert shop.service.get_order(order.id, ALICE) == order


def test_pay_input_is_checked(shop: Shop) -> None:
    with pytest.raises(InvalidArgument) as caught:
        shop.service.pay_order("", "", "x" * 101, ALICE)
    assert {v.field for v in caught.value.violations} == {"id", "payment_token", "request_id"}


@pytest.mark.parametrize("declined_first", [False, True])
def test_cancel_pending_or_failed_then_nothing_more(shop: Shop, declined_first: bool) -> None:
    order = new_order(shop)
    if declined_first:
        shop.service.pay_order(order.id, "tok_chargeDeclined", "p1", ALICE)
    cancelled = shop.service.cancel_order(order.id, ALICE)
    assert cancelled.status is OrderStatus.CANCELLED
    charges = len(shop.provider.charges)
    with pytest.raises(FailedPrecondition) as pay_refused:
        shop.service.pay_order(order.id, "tok_visa", "p9", ALICE)
    assert pay_refused.value.reason == REASON_NOT_PAYABLE
    with pytest.raises(FailedPrecondition) as cancel_refused:
        shop.service.cancel_order(order.id, ALICE)
    assert cancel_refused.value.reason == REASON_NOT_CANCELLABLE
    assert len(shop.provider.charges) == charges
    assert shop.service.get_order(order.id, ALICE) == cancelled


def test_a_paid_order_cannot_be_cancelled(shop: Shop) -> None:
    order = new_order(shop)
    paid = shop.service.pay_order(order.id, "tok_visa", "p1", ALICE)
    with pytest.raises(FailedPrecondition) as caught:
        shop.service.cancel_order(order.id, ALICE)
    assert caught.value.reason == REASON_NOT_CANCELLABLE
    assert shop.service.get_order(order.id, ALICE) == paid


def test_an_admin_may_cancel_any_order(shop: Shop) -> None:
    order = new_order(shop)
    assert shop.service.cancel_order(order.id, ADMIN).status is OrderStatus.CANCELLED
