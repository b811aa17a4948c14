"""Orders, their lines and payments, and the rules about them. No gRPC, no SQL.

The rules a reviewer should find here, in one place:

* What a valid CreateOrder request is (:func:`check_order_request`): 1 to 50 items, each a
  non-empty movie id at most once and a quantity of 1 to 100, and an idempotency key of 1
  to 100 characters. A movie id given twice is refused rather than merged: merging would
  silently change what the client asked for, and the contract says "each movie at most
  once".
* How an order is priced (:func:`price_order`): from a snapshot of the catalogue taken
  once, copied into the lines, summed in integer minor units of one currency.
* The state machine (:data:`TRANSITIONS`): PENDING -> PAID | PAYMENT_FAILED;
  PENDING | PAYMENT_FAILED -> CANCELLED; PAYMENT_FAILED -> PAID (or PAYMENT_FAILED again,
  when the next attempt is declined too). Everything else is refused with
  FAILED_PRECONDITION and changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from services.common.errors import FailedPrecondition, InvalidArgument, Violations
from services.common.ids import id_problem
from services.common.money import Money

ITEMS_MAX = 50
QUANTITY_MIN = 1
QUANTITY_MAX = 100
REQUEST_ID_MAX = 100
PAYMENT_TOKEN_MAX = 200

REASON_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
REASON_NOT_PAYABLE = "ORDER_NOT_PAYABLE"
REASON_ALREADY_PAID = "ORDER_ALREADY_PAID"
REASON_NOT_CANCELLABLE = "ORDER_NOT_CANCELLABLE"
REASON_UNKNOWN_MOVIE = "UNKNOWN_MOVIE"
REASON_MIXED_CURRENCIES = "MIXED_CURRENCIES"


class OrderStatus(Enum):
    """Where an order is in its life (the names match ``cinema.v1.OrderStatus``)."""

    PENDING = "PENDING"
    PAID = "PAID"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    CANCELLED = "CANCELLED"


class PaymentOutcome(Enum):
    """What the payment provider said about one attempt."""

    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"


# The whole state machine. PAYMENT_FAILED -> PAYMENT_FAILED is a further declined attempt
# on an order that may be paid again; PAID and CANCELLED are final.
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.PAID, OrderStatus.PAYMENT_FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.PAYMENT_FAILED: frozenset(
        {OrderStatus.PAID, OrderStatus.PAYMENT_FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.PAID: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether the state machine allows ``current`` -> ``target``."""
    return target in TRANSITIONS[current]


@dataclass(frozen=True)
class ItemRequest:
    """One line as the client sent it: a movie id and a quantity (not yet validated)."""

    movie_id: str
    quantity: int


@dataclass(frozen=True)
class CatalogueMovie:
    """What the order service needs of a movie: its title and price right now."""

    id: str
    title: str
    price: Money


@dataclass(frozen=True)
class OrderLine:
    """One line of an order, with the title and unit price copied at ordering time."""

    movie_id: str
    title: str
    quantity: int
    unit_price: Money

    @property
    def line_total(self) -> Money:
        return self.unit_price.times(self.quantity)


@dataclass(frozen=True)
class Payment:
    """One recorded attempt to pay an order.

    ``request_id`` is the client's idempotency key of the attempt and ``request_hash`` a
    fingerprint of what it asked (the payment token, never stored in the clear).
    """

    id: str
    request_id: str
    request_hash: str
    amount: Money
    outcome: PaymentOutcome
    decline_reason: str
    provider_reference: str
    create_time: dt.datetime


@dataclass(frozen=True)
class Order:
    """A purchase by one user. ``request_id``/``request_hash`` make CreateOrder idempotent."""

    id: str
    user_id: str
    request_id: str
    request_hash: str
    lines: tuple[OrderLine, ...]
    total: Money
    status: OrderStatus
    payments: tuple[Payment, ...]
    create_time: dt.datetime
    update_time: dt.datetime

    def payment_for_request(self, request_id: str) -> Payment | None:
        """The attempt made with ``request_id``, if there was one."""
        return next((p for p in self.payments if p.request_id == request_id), None)


def check_request_id(request_id: str, field: str, violations: Violations) -> None:
    """An idempotency key is opaque: 1 to 100 characters, not only blanks."""
    if not request_id.strip():
        violations.add(field, "is required: a client-chosen idempotency key such as a UUID")
    elif len(request_id) > REQUEST_ID_MAX:
        violations.add(field, f"must be at most {REQUEST_ID_MAX} characters")


def check_order_request(
    items: Sequence[ItemRequest], request_id: str, violations: Violations
) -> list[ItemRequest]:
    """The items normalised (movie ids trimmed); problems go to ``violations``."""
    check_request_id(request_id, "request_id", violations)
    if not items:
        violations.add("order.items", "at least one item is required")
    elif len(items) > ITEMS_MAX:
        violations.add("order.items", f"at most {ITEMS_MAX} items per order, got {len(items)}")
    first_index: dict[str, int] = {}
    clean: list[ItemRequest] = []
    for index, item in enumerate(items):
        path = f"order.items[{index}]"
        movie_id = item.movie_id.strip()
        if (problem := id_problem(movie_id)) is not None:
            violations.add(f"{path}.movie_id", problem)
        elif movie_id in first_index:
            violations.add(
                f"{path}.movie_id",
                f"movie {movie_id!r} is already in order.items[{first_index[movie_id]}]; "
                "give each movie once with the total quantity",
            )
        else:
            first_index[movie_id] = index
        if not QUANTITY_MIN <= item.quantity <= QUANTITY_MAX:
            violations.add(
                f"{path}.quantity",
                f"must be between {QUANTITY_MIN} and {QUANTITY_MAX}, got {item.quantity}",
            )
        clean.append(ItemRequest(movie_id, item.quantity))
    return clean


def order_request_hash(items: Sequence[ItemRequest]) -> str:
    """A fingerprint of what a CreateOrder asks for, to tell a retry from a reused key.

    Items are sorted by movie id, so a retry that lists the same items in another order
    counts as the same request.
    """
    canonical = json.dumps(
        sorted([item.movie_id, item.quantity] for item in items), separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def payment_request_hash(payment_token: str) -> str:
    """A fingerprint of what a PayOrder asks for (the token is not kept in the clear)."""
    return hashlib.sha256(payment_token.encode()).hexdigest()


def price_order(
    items: Sequence[ItemRequest], catalogue: Mapping[str, CatalogueMovie]
) -> tuple[tuple[OrderLine, ...], Money]:
    """The priced lines and total of validated ``items``.

    Raises InvalidArgument naming every unknown movie, or every item priced in another
    currency than the first item (one currency per order).
    """
    unknown = Violations()
    for index, item in enumerate(items):
        if item.movie_id not in catalogue:
            unknown.add(f"order.items[{index}].movie_id", f"unknown movie {item.movie_id!r}")
    if unknown.items:
        raise InvalidArgument(unknown.items, reason=REASON_UNKNOWN_MOVIE)
    lines = tuple(
        OrderLine(
            movie_id=item.movie_id,
            title=catalogue[item.movie_id].title,
            quantity=item.quantity,
            unit_price=catalogue[item.movie_id].price,
        )
        for item in items
    )
    currency = lines[0].unit_price.currency_code
    mixed = Violations()
    for index, line in enumerate(lines):
        if line.unit_price.currency_code != currency:
            mixed.add(
                f"order.items[{index}]",
                f"is priced in {line.unit_price.currency_code} but order.items[0] in "
                f"{currency}; an order has one currency, so order these separately",
            )
    if mixed.items:
        raise InvalidArgument(mixed.items, reason=REASON_MIXED_CURRENCIES)
    total = Money(currency, sum(line.line_total.amount_minor for line in lines))
    return lines, total


def _status_metadata(order: Order) -> dict[str, str]:
    return {"order_id": order.id, "status": order.status.value}


def check_payable(order: Order) -> None:
    """Raise FailedPrecondition unless a payment attempt may be made on ``order``.

    A PAID order gets its own reason, so a client that retried with a fresh request id
    learns that its money was taken once, not that something is wrong.
    """
    if can_transition(order.status, OrderStatus.PAID):
        return
    if order.status is OrderStatus.PAID:
        raise FailedPrecondition(
            f"order {order.id!r} is already paid; it is never charged twice",
            reason=REASON_ALREADY_PAID,
            metadata=_status_metadata(order),
        )
    raise FailedPrecondition(
        f"order {order.id!r} is {order.status.value} and cannot be paid",
        reason=REASON_NOT_PAYABLE,
        metadata=_status_metadata(order),
    )


def record_payment(order: Order, payment: Payment, now: dt.datetime) -> Order:
    """``order`` after the attempt ``payment``: PAID on success, else PAYMENT_FAILED."""
    check_payable(order)
    target = (
        OrderStatus.PAID
        if payment.outcome is PaymentOutcome.SUCCEEDED
        else OrderStatus.PAYMENT_FAILED
    )
    return dataclasses.replace(
        order, status=target, payments=(*order.payments, payment), update_time=now
    )


def cancel(order: Order, now: dt.datetime) -> Order:
    """``order`` cancelled; FailedPrecondition when its status does not allow it."""
    if not can_transition(order.status, OrderStatus.CANCELLED):
        raise FailedPrecondition(
            f"order {order.id!r} is {order.status.value} and cannot be cancelled",
            reason=REASON_NOT_CANCELLABLE,
            metadata=_status_metadata(order),
        )
    return dataclasses.replace(order, status=OrderStatus.CANCELLED, update_time=now)
