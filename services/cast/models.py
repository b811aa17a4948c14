"""The cast service's tables (SQLAlchemy 2.0). Only this service reads them.

``request_key`` and ``request_hash`` make CreateCast idempotent
(:mod:`services.common.idempotency`): the unique index lets one cast member per key in,
across replicas. Both are NULL for a cast member created without a key, and NULLs never
collide in a unique index (PostgreSQL and SQLite alike).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common import handled_calls
from services.common.events import tables as event_tables
from services.common.idempotency import REQUEST_HASH_LENGTH, REQUEST_KEY_MAX

REQUEST_KEY_INDEX = "uq_casts_request_key"


class Base(DeclarativeBase):
    """Metadata of the cast database."""


class CastRow(Base):
    __tablename__ = "casts"
    __table_args__ = (Index(REQUEST_KEY_INDEX, "request_key", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    nationality: Mapped[str | None] = mapped_column(String(100))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    request_key: Mapped[str | None] = mapped_column(String(REQUEST_KEY_MAX))
    request_hash: Mapped[str | None] = mapped_column(String(REQUEST_HASH_LENGTH))


#: The outbox and inbox (services.common.events.tables), like every service's.
EVENTS = event_tables.define(Base.metadata)
#: The calls Envoy may repeat that this service carried out (services.common.handled_calls).
HANDLED_CALLS = handled_calls.define(Base.metadata)
