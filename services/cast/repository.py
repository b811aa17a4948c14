"""Persistence of cast members: the repository protocol and its SQLAlchemy implementation.

Cast members are read without their ``request_key`` and ``request_hash``: only
CreateCast's idempotency check needs them (:meth:`SqlAlchemyCastRepository.find_by_request_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.cast.domain import Cast
from services.cast.models import REQUEST_KEY_INDEX, Base, CastRow
from services.common.clock import as_utc
from services.common.db import CoreUnitOfWork, UnitOfWork
from services.common.idempotency import DuplicateRequestKey, RequestRecord, is_unique_violation


class CastRepository(Protocol):
    def add(self, cast: Cast, request: RequestRecord | None = None) -> None:
        """Store a new cast member, with the key and fingerprint of the create that made
        it; :class:`DuplicateRequestKey` when another cast member has that key."""
        ...

    def find_by_request_key(self, key: str) -> tuple[Cast, str] | None:
        """The cast member stored with the request key ``key`` and its request's fingerprint."""
        ...

    def get(self, cast_id: str) -> Cast | None: ...
    def get_many(self, cast_ids: Sequence[str]) -> list[Cast]: ...
    def list_page(self, after_id: str | None, limit: int) -> list[Cast]: ...
    def save(self, cast: Cast) -> None: ...
    def delete(self, cast_id: str) -> bool: ...


class CastUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the cast tables."""

    @property
    def casts(self) -> CastRepository: ...


_casts = Base.metadata.tables[CastRow.__tablename__]
# What a Cast is made of, in table order (see _to_domain): every column but the two that
# only the idempotency check reads.
_CAST_COLUMNS = [c for c in _casts.c if c.name not in ("request_key", "request_hash")]

# Statements built once: SQLAlchemy then finds their compiled form by a cheap cache key
# instead of walking a new statement per call. BatchGetCasts runs on every movie create
# and update; its IN list is an expanding parameter, so one statement fits any length.
_INSERT = insert(_casts)
_GET = select(*_CAST_COLUMNS).where(_casts.c.id == bindparam("cast_id"))
_GET_MANY = select(*_CAST_COLUMNS).where(_casts.c.id.in_(bindparam("cast_ids", expanding=True)))
# CreateCast's idempotency check: the cast member stored with a key, its fingerprint last.
_FIND_BY_REQUEST_KEY = select(*_CAST_COLUMNS, _casts.c.request_hash).where(
    _casts.c.request_key == bindparam("request_key")
)
_UPDATE = update(_casts).where(_casts.c.id == bindparam("cast_id"))
_DELETE = delete(_casts).where(_casts.c.id == bindparam("cast_id"))


def _to_domain(row: Sequence[Any]) -> Cast:
    """A cast member from a row of ``_CAST_COLUMNS``."""
    cast_id, name, nationality, created, updated = row
    return Cast(cast_id, name, nationality, as_utc(created), as_utc(updated))


class SqlAlchemyCastRepository:
    """Core statements rather than ORM objects: BatchGetCasts, which every movie create
    and update makes, is one SELECT with no identity map (docs/benchmarks.md)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, cast: Cast, request: RequestRecord | None = None) -> None:
        try:
            self._connection.execute(
                _INSERT,
                {
                    "id": cast.id,
                    "name": cast.name,
                    "nationality": cast.nationality,
                    "create_time": cast.create_time,
                    "update_time": cast.update_time,
                    "request_key": request.key.stored if request else None,
                    "request_hash": request.request_hash if request else None,
                },
            )
        except IntegrityError as error:
            if is_unique_violation(error, constraint=REQUEST_KEY_INDEX, column="casts.request_key"):
                raise DuplicateRequestKey("casts.request_key") from error
            raise

    def find_by_request_key(self, key: str) -> tuple[Cast, str] | None:
        row = self._connection.execute(_FIND_BY_REQUEST_KEY, {"request_key": key}).first()
        return (_to_domain(row[:-1]), row[-1]) if row else None

    def get(self, cast_id: str) -> Cast | None:
        row = self._connection.execute(_GET, {"cast_id": cast_id}).first()
        return _to_domain(row) if row else None

    def get_many(self, cast_ids: Sequence[str]) -> list[Cast]:
        rows = self._connection.execute(_GET_MANY, {"cast_ids": sorted(set(cast_ids))})
        return [_to_domain(row) for row in rows]

    def list_page(self, after_id: str | None, limit: int) -> list[Cast]:
        query = select(*_CAST_COLUMNS).order_by(_casts.c.id).limit(limit)
        if after_id is not None:
            query = query.where(_casts.c.id > after_id)
        return [_to_domain(row) for row in self._connection.execute(query)]

    def save(self, cast: Cast) -> None:
        self._connection.execute(
            _UPDATE,
            {
                "cast_id": cast.id,
                "name": cast.name,
                "nationality": cast.nationality,
                "update_time": cast.update_time,
            },
        )

    def delete(self, cast_id: str) -> bool:
        result = self._connection.execute(_DELETE, {"cast_id": cast_id})
        return bool(result.rowcount)


class SqlAlchemyCastUnitOfWork(CoreUnitOfWork):
    """Cast reads are each one statement; writes are one transaction."""

    casts: SqlAlchemyCastRepository

    def _bind(self, connection: Connection) -> None:
        self.casts = SqlAlchemyCastRepository(connection)
