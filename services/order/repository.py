"""Persistence of orders: the repository protocol and its SQLAlchemy implementation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import exc, insert, select, update
from sqlalchemy.orm import Session

from services.common.db import SessionFactories, SqlAlchemyUnitOfWork, UnitOfWork, as_utc
from services.common.money import Money
from services.order.domain import Order, OrderLine, OrderStatus, Payment, PaymentOutcome
from services.order.models import Base, OrderItemRow, OrderRow, PaymentRow


class DuplicateOrderRequest(Exception):
    """Another order with the same ``(user_id, request_id)`` was stored first.

    The transaction that raised it is spoilt (PostgreSQL aborts it): read the winner in a
    new one.
    """


class OrderRepository(Protocol):
    def add(self, order: Order) -> None:
        """Store a new order with its lines; DuplicateOrderRequest if its key is taken."""
        ...

    def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order with its lines and payments. ``for_update`` locks its row until the
        transaction ends (PostgreSQL); SQLite's BEGIN IMMEDIATE already holds the lock."""
        ...

    def find_by_request(self, user_id: str, request_id: str) -> Order | None: ...

    def list_page(
        self, before_id: str | None, limit: int, *, user_id: str | None, status: OrderStatus | None
    ) -> list[Order]:
        """Up to ``limit`` orders with ids below ``before_id``, newest first."""
        ...

    def add_payment(self, order_id: str, payment: Payment) -> None: ...

    def save_status(self, order: Order) -> None:
        """Write the order's status and update time."""
        ...


class OrderUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the order tables."""

    @property
    def orders(self) -> OrderRepository: ...


_orders = Base.metadata.tables[OrderRow.__tablename__]
_items = Base.metadata.tables[OrderItemRow.__tablename__]
_payments = Base.metadata.tables[PaymentRow.__tablename__]


def _line(row: Any) -> OrderLine:
    return OrderLine(
        movie_id=row.movie_id,
        title=row.title,
        quantity=row.quantity,
        unit_price=Money(row.unit_currency, row.unit_amount_minor),
    )


def _payment(row: Any) -> Payment:
    return Payment(
        id=row.id,
        request_id=row.request_id,
        request_hash=row.request_hash,
        amount=Money(row.amount_currency, row.amount_minor),
        outcome=PaymentOutcome(row.outcome),
        decline_reason=row.decline_reason,
        provider_reference=row.provider_reference,
        create_time=as_utc(row.create_time),
    )


class SqlAlchemyOrderRepository:
    """Core statements rather than ORM objects: an order is three indexed SELECTs, a page
    of orders three as well, whatever its size."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, order: Order) -> None:
        try:
            self._session.execute(
                insert(_orders).values(
                    id=order.id,
                    user_id=order.user_id,
                    request_id=order.request_id,
                    request_hash=order.request_hash,
                    status=order.status.value,
                    total_currency=order.total.currency_code,
                    total_amount_minor=order.total.amount_minor,
                    create_time=order.create_time,
                    update_time=order.update_time,
                )
            )
        except exc.IntegrityError as error:
            # The only unique key a fresh UUIDv7 can hit is (user_id, request_id); the
            # service re-reads by that key and re-raises when it finds nothing.
            raise DuplicateOrderRequest(order.user_id, order.request_id) from error
        self._session.execute(
            insert(_items),
            [
                {
                    "order_id": order.id,
                    "position": position,
                    "movie_id": line.movie_id,
                    "title": line.title,
                    "quantity": line.quantity,
                    "unit_currency": line.unit_price.currency_code,
                    "unit_amount_minor": line.unit_price.amount_minor,
                }
                for position, line in enumerate(order.lines)
            ],
        )

    def _assemble(self, rows: Sequence[Any]) -> list[Order]:
        if not rows:
            return []
        ids = [row.id for row in rows]
        lines: dict[str, list[OrderLine]] = defaultdict(list)
        for row in self._session.execute(
            select(_items).where(_items.c.order_id.in_(ids)).order_by(_items.c.position)
        ):
            lines[row.order_id].append(_line(row))
        payments: dict[str, list[Payment]] = defaultdict(list)
        for row in self._session.execute(
            select(_payments)
            .where(_payments.c.order_id.in_(ids))
            .order_by(_payments.c.create_time, _payments.c.id)
        ):
            payments[row.order_id].append(_payment(row))
        return [
            Order(
                id=row.id,
                user_id=row.user_id,
                request_id=row.request_id,
                request_hash=row.request_hash,
                lines=tuple(lines[row.id]),
                total=Money(row.total_currency, row.total_amount_minor),
                status=OrderStatus(row.status),
                payments=tuple(payments[row.id]),
                create_time=as_utc(row.create_time),
                update_time=as_utc(row.update_time),
            )
            for row in rows
        ]

    def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        query = select(_orders).where(_orders.c.id == order_id)
        if for_update:
            # PostgreSQL: concurrent PayOrder/CancelOrder calls on one order queue here.
            # SQLite renders no FOR UPDATE; its BEGIN IMMEDIATE serialises writers anyway.
            query = query.with_for_update()
        found = self._assemble(self._session.execute(query).all())
        return found[0] if found else None

    def find_by_request(self, user_id: str, request_id: str) -> Order | None:
        rows = self._session.execute(
            select(_orders).where(_orders.c.user_id == user_id, _orders.c.request_id == request_id)
        ).all()
        found = self._assemble(rows)
        return found[0] if found else None

    def list_page(
        self, before_id: str | None, limit: int, *, user_id: str | None, status: OrderStatus | None
    ) -> list[Order]:
        query = select(_orders).order_by(_orders.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(_orders.c.id < before_id)
        if user_id is not None:
            query = query.where(_orders.c.user_id == user_id)
        if status is not None:
            query = query.where(_orders.c.status == status.value)
        return self._assemble(self._session.execute(query).all())

    def add_payment(self, order_id: str, payment: Payment) -> None:
        self._session.execute(
            insert(_payments).values(
                id=payment.id,
                order_id=order_id,
                request_id=payment.request_id,
                request_hash=payment.request_hash,
                amount_currency=payment.amount.currency_code,
                amount_minor=payment.amount.amount_minor,
                outcome=payment.outcome.value,
                decline_reason=payment.decline_reason,
                provider_reference=payment.provider_reference,
                create_time=payment.create_time,
            )
        )

    def save_status(self, order: Order) -> None:
        self._session.execute(
            update(_orders)
            .where(_orders.c.id == order.id)
            .values(status=order.status.value, update_time=order.update_time)
        )


class SqlAlchemyOrderUnitOfWork(SqlAlchemyUnitOfWork):
    orders: SqlAlchemyOrderRepository

    def __init__(self, sessions: SessionFactories, *, read_only: bool = False) -> None:
        super().__init__(sessions, read_only=read_only)

    def _bind(self, session: Session) -> None:
        self.orders = SqlAlchemyOrderRepository(session)
