"""Persistence of orders: the repository protocol and its SQLAlchemy implementation.

Core statements on one connection (:class:`~services.common.db.CoreUnitOfWork`), the
hot ones built once at module level. An order is read in two statements whichever way it
is read, and both ways are consistent without a snapshot spanning them (PostgreSQL's READ
COMMITTED gives each statement its own snapshot, inside a transaction or not):

* Lines never change once their order is committed (they are inserted in the order's
  transaction and nothing updates or deletes them), so they may be read in a statement
  of their own, before or after the rest.
* Status and payments change together (PayOrder writes both in one transaction), so a
  plain read takes them in ONE statement: the order joined with its payments.
* A locked read (PayOrder, CancelOrder) must lock the order row first and read the
  payments in a later statement: a ``SELECT ... FOR UPDATE`` that waited for another
  payment's commit returns the order row as that commit left it, but rows of other
  tables joined to it as they were before (PostgreSQL re-checks only the locked row), so
  joining the payments there could miss the payment just made. The lines, which never
  change, are joined to the locked row instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, FromClause, Select, bindparam, exc, insert, select, update

from services.common.clock import as_utc
from services.common.db import CoreUnitOfWork, UnitOfWork
from services.common.money import Money
from services.common.tombstones import Tombstones, TombstoneStore
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

    def unpaid_of_user(self, user_id: str) -> list[str]:
        """Ids of the account's PENDING and PAYMENT_FAILED orders."""
        ...

    def unpaid_with_movie(self, movie_id: str) -> list[str]:
        """Ids of the PENDING and PAYMENT_FAILED orders with a line for ``movie_id``."""
        ...


class OrderUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the order tables."""

    @property
    def orders(self) -> OrderRepository: ...
    @property
    def tombstones(self) -> TombstoneStore: ...


_orders = Base.metadata.tables[OrderRow.__tablename__]
_items = Base.metadata.tables[OrderItemRow.__tablename__]
_payments = Base.metadata.tables[PaymentRow.__tablename__]
_ORDER_WIDTH = len(_orders.c)


def _with_payments(orders: FromClause) -> Select[Any]:
    """Each row of ``orders`` once per payment (or once with NULLs), payments oldest first.

    Columns: ``orders``' then ``_payments``', each in table order.
    """
    return (
        select(orders, _payments)
        .select_from(orders.outerjoin(_payments, _payments.c.order_id == orders.c.id))
        .order_by(_payments.c.create_time, _payments.c.id)
    )


# The buy path's statements (CreateOrder's idempotency check and writes, PayOrder's locked
# read and writes), built once so that SQLAlchemy finds them compiled in its cache.
_FIND_BY_REQUEST = _with_payments(_orders).where(
    _orders.c.user_id == bindparam("user_id"), _orders.c.request_id == bindparam("request_id")
)
_GET = _with_payments(_orders).where(_orders.c.id == bindparam("order_id"))
_GET_LOCKED = (
    select(_orders, _items)
    .select_from(_orders.outerjoin(_items, _items.c.order_id == _orders.c.id))
    .where(_orders.c.id == bindparam("order_id"))
    .order_by(_items.c.position)
    # Only the order's row: PostgreSQL refuses to lock the nullable side of an outer
    # join, and the lines need no lock. SQLite renders no FOR UPDATE.
    .with_for_update(of=_orders)
)
_PAYMENTS_OF = (
    select(_payments)
    .where(_payments.c.order_id == bindparam("order_id"))
    .order_by(_payments.c.create_time, _payments.c.id)
)
_ITEMS_OF = (
    select(_items)
    .where(_items.c.order_id.in_(bindparam("order_ids", expanding=True)))
    .order_by(_items.c.order_id, _items.c.position)
)
_INSERT_ORDER = insert(_orders)
_INSERT_ITEMS = insert(_items)
_INSERT_PAYMENT = insert(_payments)
# The SET clause comes from the parameters' keys (status, update_time).
_SAVE_STATUS = update(_orders).where(_orders.c.id == bindparam("order_id"))


def _line(row: Sequence[Any]) -> OrderLine:
    """A line from ``_items``' columns in table order."""
    _order_id, _position, movie_id, title, quantity, currency, amount = row
    return OrderLine(movie_id, title, quantity, Money(currency, amount))


def _payment(row: Sequence[Any]) -> Payment:
    """A payment from ``_payments``' columns in table order."""
    (
        payment_id,
        _order_id,
        request_id,
        request_hash,
        currency,
        amount,
        outcome,
        decline_reason,
        provider_reference,
        created,
    ) = row
    return Payment(
        id=payment_id,
        request_id=request_id,
        request_hash=request_hash,
        amount=Money(currency, amount),
        outcome=PaymentOutcome(outcome),
        decline_reason=decline_reason,
        provider_reference=provider_reference,
        create_time=as_utc(created),
    )


def _order(row: Sequence[Any], lines: Iterable[OrderLine], payments: Iterable[Payment]) -> Order:
    """An order from ``_orders``' columns in table order, with its lines and payments."""
    (
        order_id,
        user_id,
        request_id,
        request_hash,
        status,
        currency,
        amount,
        created,
        updated,
    ) = row
    return Order(
        id=order_id,
        user_id=user_id,
        request_id=request_id,
        request_hash=request_hash,
        lines=tuple(lines),
        total=Money(currency, amount),
        status=OrderStatus(status),
        payments=tuple(payments),
        create_time=as_utc(created),
        update_time=as_utc(updated),
    )


def _order_columns(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "user_id": order.user_id,
        "request_id": order.request_id,
        "request_hash": order.request_hash,
        "status": order.status.value,
        "total_currency": order.total.currency_code,
        "total_amount_minor": order.total.amount_minor,
        "create_time": order.create_time,
        "update_time": order.update_time,
    }


class SqlAlchemyOrderRepository:
    """Core statements rather than ORM objects: any read of orders is two indexed
    SELECTs, one order or a page of them (see the module's docstring for why two)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, order: Order) -> None:
        try:
            self._connection.execute(_INSERT_ORDER, _order_columns(order))
        except exc.IntegrityError as error:
            # The only unique key a fresh UUIDv7 can hit is (user_id, request_id); the
            # service re-reads by that key and re-raises when it finds nothing.
            raise DuplicateOrderRequest(order.user_id, order.request_id) from error
        # One multi-row INSERT (psycopg2's execute_values), not one per line.
        self._connection.execute(
            _INSERT_ITEMS,
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

    def _assemble(self, rows: Sequence[Sequence[Any]]) -> list[Order]:
        """Orders from rows of :func:`_with_payments`, in the rows' order, with their lines
        read in one more statement."""
        heads: dict[str, Sequence[Any]] = {}
        payments: dict[str, list[Payment]] = {}
        for row in rows:
            order_id = row[0]
            if order_id not in heads:
                heads[order_id] = row[:_ORDER_WIDTH]
                payments[order_id] = []
            if row[_ORDER_WIDTH] is not None:
                payments[order_id].append(_payment(row[_ORDER_WIDTH:]))
        if not heads:
            return []
        lines: dict[str, list[OrderLine]] = {order_id: [] for order_id in heads}
        for item in self._connection.execute(_ITEMS_OF, {"order_ids": list(heads)}):
            lines[item[0]].append(_line(item))
        return [_order(head, lines[i], payments[i]) for i, head in heads.items()]

    def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        if for_update:
            return self._get_locked(order_id)
        found = self._assemble(self._connection.execute(_GET, {"order_id": order_id}).all())
        return found[0] if found else None

    def _get_locked(self, order_id: str) -> Order | None:
        # PostgreSQL: concurrent PayOrder/CancelOrder calls on one order queue here.
        # SQLite renders no FOR UPDATE; its BEGIN IMMEDIATE serialises writers anyway.
        rows = self._connection.execute(_GET_LOCKED, {"order_id": order_id}).all()
        if not rows:
            return None
        lines = [_line(row[_ORDER_WIDTH:]) for row in rows if row[_ORDER_WIDTH] is not None]
        # After the lock is held: sees every payment committed before it was granted.
        payments = [
            _payment(row) for row in self._connection.execute(_PAYMENTS_OF, {"order_id": order_id})
        ]
        return _order(rows[0][:_ORDER_WIDTH], lines, payments)

    def find_by_request(self, user_id: str, request_id: str) -> Order | None:
        # CreateOrder asks this first on every call; a new request is one SELECT.
        rows = self._connection.execute(
            _FIND_BY_REQUEST, {"user_id": user_id, "request_id": request_id}
        ).all()
        found = self._assemble(rows)
        return found[0] if found else None

    def list_page(
        self, before_id: str | None, limit: int, *, user_id: str | None, status: OrderStatus | None
    ) -> list[Order]:
        page = select(_orders).order_by(_orders.c.id.desc()).limit(limit)
        if before_id is not None:
            page = page.where(_orders.c.id < before_id)
        if user_id is not None:
            page = page.where(_orders.c.user_id == user_id)
        if status is not None:
            page = page.where(_orders.c.status == status.value)
        # The limit applies to orders, not to order-and-payment rows.
        orders = page.subquery("page")
        query = (
            _with_payments(orders)
            .order_by(None)
            .order_by(orders.c.id.desc(), _payments.c.create_time, _payments.c.id)
        )
        return self._assemble(self._connection.execute(query).all())

    def add_payment(self, order_id: str, payment: Payment) -> None:
        self._connection.execute(
            _INSERT_PAYMENT,
            {
                "id": payment.id,
                "order_id": order_id,
                "request_id": payment.request_id,
                "request_hash": payment.request_hash,
                "amount_currency": payment.amount.currency_code,
                "amount_minor": payment.amount.amount_minor,
                "outcome": payment.outcome.value,
                "decline_reason": payment.decline_reason,
                "provider_reference": payment.provider_reference,
                "create_time": payment.create_time,
            },
        )

    def save_status(self, order: Order) -> None:
        self._connection.execute(
            _SAVE_STATUS,
            {"order_id": order.id, "status": order.status.value, "update_time": order.update_time},
        )

    def unpaid_of_user(self, user_id: str) -> list[str]:
        return list(
            self._connection.scalars(
                select(_orders.c.id)
                .where(_orders.c.user_id == user_id, _orders.c.status.in_(_UNPAID))
                .order_by(_orders.c.id)
            )
        )

    def unpaid_with_movie(self, movie_id: str) -> list[str]:
        return list(
            self._connection.scalars(
                select(_orders.c.id)
                .where(
                    _orders.c.status.in_(_UNPAID),
                    _orders.c.id.in_(
                        select(_items.c.order_id).where(_items.c.movie_id == movie_id)
                    ),
                )
                .order_by(_orders.c.id)
            )
        )


_UNPAID = [OrderStatus.PENDING.value, OrderStatus.PAYMENT_FAILED.value]


class SqlAlchemyOrderUnitOfWork(CoreUnitOfWork):
    """Writes are one transaction. Reads (``read_only=True``) run without one, in
    autocommit on PostgreSQL: each read is consistent on its own (module docstring)."""

    orders: SqlAlchemyOrderRepository

    @property
    def tombstones(self) -> Tombstones:
        """What other services deleted (built on first use: a read never pays for it)."""
        return Tombstones(self.connection)

    def _bind(self, connection: Connection) -> None:
        self.orders = SqlAlchemyOrderRepository(connection)
