"""The order rules on their own: request checks, pricing, request fingerprints and the
state machine."""

from __future__ import annotations

import datetime as dt

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, Violations
from services.common.money import Money
from services.order.domain import (
    ITEMS_MAX,
    REASON_ALREADY_PAID,
    REASON_MIXED_CURRENCIES,
    REASON_NOT_CANCELLABLE,
    REASON_NOT_PAYABLE,
    REASON_UNKNOWN_MOVIE,
    TRANSITIONS,
    CatalogueMovie,
    ItemRequest,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentOutcome,
    can_transition,
    cancel,
    check_order_request,
    order_request_hash,
    price_order,
    record_payment,
)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=1)


def violations_of(items: list[ItemRequest], request_id: str = "req-1") -> dict[str, str]:
    violations = Violations()
    check_order_request(items, request_id, violations)
    return {v.field: v.description for v in violations.items}


def order(status: OrderStatus, payments: tuple[Payment, ...] = ()) -> Order:
    line = OrderLine("m1", "Alien", 2, Money("USD", 999))
    return Order(
        id="o1",
        user_id="u1",
        request_id="req-1",
        request_hash="h",
        lines=(line,),
        total=Money("USD", 1998),
        status=status,
        payments=payments,
        create_time=NOW,
        update_time=NOW,
    )


def payment(outcome: PaymentOutcome, request_id: str = "pay-1") -> Payment:
    return Payment(
        id="p-" + request_id,
        request_id=request_id,
        request_hash="t",
        amount=Money("USD", 1998),
        outcome=outcome,
        decline_reason="" if outcome is PaymentOutcome.SUCCEEDED else "card_declined",
        provider_reference="ref",
        create_time=LATER,
    )


# --- request checks --------------------------------------------------------------------


def test_a_good_request_is_normalised_and_passes() -> None:
    violations = Violations()
    clean = check_order_request([ItemRequest("  m1 ", 2), ItemRequest("m2", 1)], "r", violations)
    assert violations.items == []
    assert clean == [ItemRequest("m1", 2), ItemRequest("m2", 1)]


@pytest.mark.parametrize(
    ("items", "request_id", "field"),
    [
        ([], "r", "order.items"),
        ([ItemRequest(f"m{i}", 1) for i in range(ITEMS_MAX + 1)], "r", "order.items"),
        ([ItemRequest("m1", 1), ItemRequest("m2", 0)], "r", "order.items[1].quantity"),
        ([ItemRequest("m1", -3)], "r", "order.items[0].quantity"),
        ([ItemRequest("m1", 101)], "r", "order.items[0].quantity"),
        ([ItemRequest("", 1)], "r", "order.items[0].movie_id"),
        ([ItemRequest("   ", 1)], "r", "order.items[0].movie_id"),
        ([ItemRequest("m" * 101, 1)], "r", "order.items[0].movie_id"),
        (
            [ItemRequest("m1", 1), ItemRequest("m2", 1), ItemRequest(" m1", 2)],
            "r",
            "order.items[2].movie_id",
        ),
        ([ItemRequest("m1", 1)], "", "request_id"),
        ([ItemRequest("m1", 1)], "   ", "request_id"),
        ([ItemRequest("m1", 1)], "r" * 101, "request_id"),
    ],
)
def test_bad_requests_name_the_field(items: list[ItemRequest], request_id: str, field: str) -> None:
    assert field in violations_of(items, request_id)


def test_boundaries_are_accepted() -> None:
    items = [ItemRequest(f"m{i}", 100 if i % 2 else 1) for i in range(ITEMS_MAX)]
    assert violations_of(items, "r" * 100) == {}


def test_every_problem_is_reported_at_once() -> None:
    found = violations_of([ItemRequest("", 0), ItemRequest("m1", 1), ItemRequest("m1", 200)], "")
    assert set(found) == {
        "request_id",
        "order.items[0].movie_id",
        "order.items[0].quantity",
        "order.items[2].movie_id",
        "order.items[2].quantity",
    }
    assert "order.items[1]" in found["order.items[2].movie_id"]


def test_the_request_hash_ignores_item_order_but_not_content() -> None:
    a = order_request_hash([ItemRequest("m1", 1), ItemRequest("m2", 2)])
    assert a == order_request_hash([ItemRequest("m2", 2), ItemRequest("m1", 1)])
    assert a != order_request_hash([ItemRequest("m1", 1), ItemRequest("m2", 3)])
    assert a != order_request_hash([ItemRequest("m1", 1)])


# --- pricing ---------------------------------------------------------------------------


CATALOGUE = {
    "m1": CatalogueMovie("m1", "Alien", Money("USD", 999)),
    "m2": CatalogueMovie("m2", "Aliens", Money("USD", 1500)),
    "m3": CatalogueMovie("m3", "Amélie", Money("EUR", 1200)),
}


def test_lines_copy_title_and_price_and_the_total_is_exact() -> None:
    lines, total = price_order([ItemRequest("m1", 2), ItemRequest("m2", 1)], CATALOGUE)
    assert lines == (
        OrderLine("m1", "Alien", 2, Money("USD", 999)),
        OrderLine("m2", "Aliens", 1, Money("USD", 1500)),
    )
    assert [line.line_total for line in lines] == [Money("USD", 1998), Money("USD", 1500)]
    assert total == Money("USD", 3498)


def test_large_orders_stay_integers() -> None:
    catalogue = {
        f"m{i}": CatalogueMovie(f"m{i}", "x", Money("USD", 10_000_000_000)) for i in range(50)
    }
    _, total = price_order([ItemRequest(f"m{i}", 100) for i in range(50)], catalogue)
    assert total == Money("USD", 50 * 100 * 10_000_000_000)
    assert isinstance(total.amount_minor, int)


def test_unknown_movies_are_named() -> None:
    with pytest.raises(InvalidArgument) as caught:
        price_order(
            [ItemRequest("m1", 1), ItemRequest("nope", 1), ItemRequest("gone", 1)], CATALOGUE
        )
    assert caught.value.reason == REASON_UNKNOWN_MOVIE
    assert [v.field for v in caught.value.violations] == [
        "order.items[1].movie_id",
        "order.items[2].movie_id",
    ]


def test_mixed_currencies_name_the_items() -> None:
    with pytest.raises(InvalidArgument) as caught:
        price_order([ItemRequest("m1", 1), ItemRequest("m3", 1), ItemRequest("m2", 1)], CATALOGUE)
    assert caught.value.reason == REASON_MIXED_CURRENCIES
    assert [v.field for v in caught.value.violations] == ["order.items[1]"]
    assert "EUR" in caught.value.violations[0].description
    assert "USD" in caught.value.violations[0].description


# --- state machine ---------------------------------------------------------------------


def test_the_state_machine_is_exactly_the_documented_one() -> None:
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert allowed == {
        (OrderStatus.PENDING, OrderStatus.PAID),
        (OrderStatus.PENDING, OrderStatus.PAYMENT_FAILED),
        (OrderStatus.PENDING, OrderStatus.CANCELLED),
        (OrderStatus.PAYMENT_FAILED, OrderStatus.PAID),
        (OrderStatus.PAYMENT_FAILED, OrderStatus.PAYMENT_FAILED),
        (OrderStatus.PAYMENT_FAILED, OrderStatus.CANCELLED),
    }
    assert not can_transition(OrderStatus.PAID, OrderStatus.CANCELLED)
    assert not can_transition(OrderStatus.CANCELLED, OrderStatus.PAID)


@pytest.mark.parametrize(
    ("start", "outcome", "end"),
    [
        (OrderStatus.PENDING, PaymentOutcome.SUCCEEDED, OrderStatus.PAID),
        (OrderStatus.PENDING, PaymentOutcome.DECLINED, OrderStatus.PAYMENT_FAILED),
        (OrderStatus.PAYMENT_FAILED, PaymentOutcome.SUCCEEDED, OrderStatus.PAID),
        (OrderStatus.PAYMENT_FAILED, PaymentOutcome.DECLINED, OrderStatus.PAYMENT_FAILED),
    ],
)
def test_allowed_payments(start: OrderStatus, outcome: PaymentOutcome, end: OrderStatus) -> None:
    before = order(start)
    attempt = payment(outcome)
    after = record_payment(before, attempt, LATER)
    assert after.status is end
    assert after.payments == (attempt,)
    assert after.update_time == LATER
    assert after.payment_for_request("pay-1") == attempt
    assert before.status is start  # the input is not changed


@pytest.mark.parametrize(
    ("start", "reason"),
    [(OrderStatus.PAID, REASON_ALREADY_PAID), (OrderStatus.CANCELLED, REASON_NOT_PAYABLE)],
)
def test_refused_payments(start: OrderStatus, reason: str) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        record_payment(order(start), payment(PaymentOutcome.SUCCEEDED), LATER)
    assert caught.value.reason == reason
    assert caught.value.metadata == {"order_id": "o1", "status": start.value}


@pytest.mark.parametrize("start", [OrderStatus.PENDING, OrderStatus.PAYMENT_FAILED])
def test_allowed_cancellations(start: OrderStatus) -> None:
    cancelled = cancel(order(start), LATER)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.update_time == LATER


@pytest.mark.parametrize("start", [OrderStatus.PAID, OrderStatus.CANCELLED])
def test_refused_cancellations(start: OrderStatus) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        cancel(order(start), LATER)
    assert caught.value.reason == REASON_NOT_CANCELLABLE
