"""Persistence of cast members: the repository protocol and its SQLAlchemy implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.cast.domain import Cast
from services.cast.models import CastRow
from services.common.db import SessionFactories, SqlAlchemyUnitOfWork, UnitOfWork, as_utc


class CastRepository(Protocol):
    def add(self, cast: Cast) -> None: ...
    def get(self, cast_id: str) -> Cast | None: ...
    def get_many(self, cast_ids: Sequence[str]) -> list[Cast]: ...
    def list_page(self, after_id: str | None, limit: int) -> list[Cast]: ...
    def save(self, cast: Cast) -> None: ...
    def delete(self, cast_id: str) -> bool: ...


class CastUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the cast tables."""

    @property
    def casts(self) -> CastRepository: ...


def _to_domain(row: CastRow) -> Cast:
    return Cast(
        id=row.id,
        name=row.name,
        nationality=row.nationality,
        create_time=as_utc(row.create_time),
        update_time=as_utc(row.update_time),
    )


class SqlAlchemyCastRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, cast: Cast) -> None:
        self._session.add(
            CastRow(
                id=cast.id,
                name=cast.name,
                nationality=cast.nationality,
                create_time=cast.create_time,
                update_time=cast.update_time,
            )
        )

    def get(self, cast_id: str) -> Cast | None:
        row = self._session.get(CastRow, cast_id)
        return _to_domain(row) if row else None

    def get_many(self, cast_ids: Sequence[str]) -> list[Cast]:
        rows = self._session.scalars(select(CastRow).where(CastRow.id.in_(set(cast_ids))))
        return [_to_domain(r) for r in rows]

    def list_page(self, after_id: str | None, limit: int) -> list[Cast]:
        query = select(CastRow).order_by(CastRow.id).limit(limit)
        if after_id is not None:
            query = query.where(CastRow.id > after_id)
        return [_to_domain(r) for r in self._session.scalars(query)]

    def save(self, cast: Cast) -> None:
        row = self._session.get(CastRow, cast.id)
        assert row is not None
        row.name = cast.name
        row.nationality = cast.nationality
        row.update_time = cast.update_time

    def delete(self, cast_id: str) -> bool:
        result = self._session.execute(delete(CastRow).where(CastRow.id == cast_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


class SqlAlchemyCastUnitOfWork(SqlAlchemyUnitOfWork):
    casts: SqlAlchemyCastRepository

    def __init__(self, sessions: SessionFactories, *, read_only: bool = False) -> None:
        super().__init__(sessions, read_only=read_only)

    def _bind(self, session: Session) -> None:
        self.casts = SqlAlchemyCastRepository(session)
