"""The movie service's tables (SQLAlchemy 2.0). Only this service reads them.

Genres and cast ids live twice on purpose: as JSON on the movie row, so reading a movie is
one primary-key lookup, and in two narrow indexed tables, so ListMovies can filter by
genre or cast id. Both are written in the same transaction.

``request_key`` and ``request_hash`` make CreateMovie idempotent
(:mod:`services.common.idempotency`): the unique index lets one movie per key in, across
replicas. Both are NULL for a movie created without a key, and NULLs never collide in a
unique index (PostgreSQL and SQLite alike).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common import handled_calls, tombstones
from services.common.events import tables as event_tables
from services.common.idempotency import REQUEST_HASH_LENGTH, REQUEST_KEY_MAX

REQUEST_KEY_INDEX = "uq_movies_request_key"


class Base(DeclarativeBase):
    """Metadata of the movie database."""


class MovieRow(Base):
    __tablename__ = "movies"
    __table_args__ = (Index(REQUEST_KEY_INDEX, "request_key", unique=True),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    plot: Mapped[str] = mapped_column(Text)
    genres: Mapped[list[str]] = mapped_column(JSON)
    cast_ids: Mapped[list[str]] = mapped_column(JSON)
    price_currency: Mapped[str] = mapped_column(String(3))
    price_amount_minor: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    request_key: Mapped[str | None] = mapped_column(String(REQUEST_KEY_MAX))
    request_hash: Mapped[str | None] = mapped_column(String(REQUEST_HASH_LENGTH))


class MovieGenreRow(Base):
    __tablename__ = "movie_genres"

    movie_id: Mapped[str] = mapped_column(
        ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True
    )
    genre: Mapped[str] = mapped_column(String(50), primary_key=True, index=True)


class MovieCastRow(Base):
    __tablename__ = "movie_casts"

    movie_id: Mapped[str] = mapped_column(
        ForeignKey("movies.id", ondelete="CASCADE"), primary_key=True
    )
    cast_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


#: The outbox and inbox (services.common.events.tables), like every service's.
EVENTS = event_tables.define(Base.metadata)
#: The calls Envoy may repeat that this service carried out (services.common.handled_calls).
HANDLED_CALLS = handled_calls.define(Base.metadata)
#: Ids deleted by other services, as this one's consumer learnt (services.common.tombstones).
TOMBSTONES = tombstones.define(Base.metadata)
