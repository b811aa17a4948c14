"""The order service's events: what it publishes (OrderPaid, OrderCancelled) and what it
handles, translated between the domain and ``events.proto``.

* ``UserDeleted`` -> the account's unpaid orders (PENDING, PAYMENT_FAILED) are cancelled,
  each with an OrderCancelled (reason USER_DELETED). Paid orders stay: they are the
  record of a sale.
* ``MovieDeleted`` -> unpaid orders with that movie are cancelled (reason MOVIE_DELETED):
  it can no longer be delivered, and charging for it would sell nothing.
* ``MovieChanged`` is not handled: an order keeps the prices it was quoted at creation
  (PayOrder charges the total shown to the buyer, never a price changed behind them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cinema.v1 import events_pb2, money_pb2
from services.common.events.bus import Consumer
from services.common.money import Money
from services.common.wire import timestamp
from services.order.domain import Order
from services.order.repository import OrderUnitOfWork

if TYPE_CHECKING:
    from services.order.service import OrderService

CONSUMER = "order"

Reason = events_pb2.OrderCancelled.Reason
REQUESTED = events_pb2.OrderCancelled.REASON_REQUESTED
USER_DELETED = events_pb2.OrderCancelled.REASON_USER_DELETED
MOVIE_DELETED = events_pb2.OrderCancelled.REASON_MOVIE_DELETED


def _money(value: Money) -> money_pb2.Money:
    return money_pb2.Money(currency_code=value.currency_code, amount_minor=value.amount_minor)


def order_paid(order: Order) -> events_pb2.OrderPaid:
    """``order`` just paid (its status PAID, its update time the payment's)."""
    return events_pb2.OrderPaid(
        order_id=order.id,
        user_id=order.user_id,
        items=[
            events_pb2.PaidItem(
                movie_id=line.movie_id,
                title=line.title,
                quantity=line.quantity,
                unit_price=_money(line.unit_price),
            )
            for line in order.lines
        ],
        total=_money(order.total),
        pay_time=timestamp(order.update_time),
        order_create_time=timestamp(order.create_time),
    )


def order_cancelled(order: Order, reason: Reason.ValueType) -> events_pb2.OrderCancelled:
    return events_pb2.OrderCancelled(order_id=order.id, user_id=order.user_id, reason=reason)


def consumer(uow: Callable[[], OrderUnitOfWork], service: OrderService) -> Consumer:
    """The order service's durable consumer."""

    def user_deleted(unit: OrderUnitOfWork, event: events_pb2.UserDeleted) -> None:
        service.forget_user(unit, event.user_id)

    def movie_deleted(unit: OrderUnitOfWork, event: events_pb2.MovieDeleted) -> None:
        service.forget_movie(unit, event.movie_id)

    return Consumer(
        CONSUMER,
        uow,
        {events_pb2.UserDeleted: user_deleted, events_pb2.MovieDeleted: movie_deleted},
    )
