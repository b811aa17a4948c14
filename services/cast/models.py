"""The cast service's tables (SQLAlchemy 2.0). Only this service reads them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Metadata of the cast database."""


class CastRow(Base):
    __tablename__ = "casts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    nationality: Mapped[str | None] = mapped_column(String(100))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
