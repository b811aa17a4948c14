"""The order service's tables (SQLAlchemy 2.0). Only this service reads them.

Idempotency lives in unique constraints, not in process memory, so it holds across
replicas: one order per ``(user_id, request_id)`` and one payment attempt per
``(order_id, request_id)``. Money is an integer amount of minor units beside its currency
code. Lines and payments keep their position and time so they read back in order.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common import handled_calls, tombstones
from services.common.events import tables as event_tables


class Base(DeclarativeBase):
    """Metadata of the order database."""


class OrderRow(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("user_id", "request_id", name="uq_orders_user_id_request_id"),
        # ListOrders for one user, newest first (ids are time-ordered).
        Index("ix_orders_user_id_id", "user_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    total_currency: Mapped[str] = mapped_column(String(3))
    total_amount_minor: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class OrderItemRow(Base):
    __tablename__ = "order_items"

    order_id: Mapped[str] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Indexed: a deleted movie cancels the unpaid orders that have it (MovieDeleted).
    movie_id: Mapped[str] = mapped_column(String(100), index=True)
    # A snapshot of the catalogue at ordering time, not a reference to it.
    title: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_currency: Mapped[str] = mapped_column(String(3))
    unit_amount_minor: Mapped[int] = mapped_column(BigInteger)


class PaymentRow(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("order_id", "request_id", name="uq_payments_order_id_request_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    amount_currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(20))
    decline_reason: Mapped[str] = mapped_column(String(200))
    provider_reference: Mapped[str] = mapped_column(String(200))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


#: The outbox and inbox (services.common.events.tables), like every service's.
EVENTS = event_tables.define(Base.metadata)
#: The calls Envoy may repeat that this service carried out (services.common.handled_calls).
HANDLED_CALLS = handled_calls.define(Base.metadata)
#: Ids deleted by other services, as this one's consumer learnt (services.common.tombstones).
TOMBSTONES = tombstones.define(Base.metadata)
