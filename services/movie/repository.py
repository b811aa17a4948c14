"""Persistence of movies: the repository protocol and its SQLAlchemy implementation."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from services.common.db import (
    SessionFactories,
    SqlAlchemyUnitOfWork,
    UnitOfWork,
    as_utc,
    raise_if_unavailable,
)
from services.common.money import Money
from services.movie.domain import Movie
from services.movie.models import Base, MovieCastRow, MovieGenreRow, MovieRow


class MovieRepository(Protocol):
    def add(self, movie: Movie) -> None: ...
    def get(self, movie_id: str) -> Movie | None: ...
    def get_many(self, movie_ids: Sequence[str]) -> list[Movie]: ...
    def list_page(
        self, after_id: str | None, limit: int, *, genre: str | None, cast_id: str | None
    ) -> list[Movie]: ...
    def save(self, movie: Movie) -> None: ...
    def delete(self, movie_id: str) -> bool: ...


class MovieUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the movie tables."""

    @property
    def movies(self) -> MovieRepository: ...


_movies = Base.metadata.tables[MovieRow.__tablename__]
_genres = Base.metadata.tables[MovieGenreRow.__tablename__]
_casts = Base.metadata.tables[MovieCastRow.__tablename__]


# GetMovie is the hot path. The statement is built once, so SQLAlchemy finds its compiled
# form in the cache instead of rebuilding it per call; on PostgreSQL the same compiled SQL
# runs straight on the pooled DBAPI cursor, which skips SQLAlchemy's per-execute work
# (cache key, result processing): about a quarter of GetMovie's CPU (docs/benchmarks.md).
_GET_MOVIE = select(_movies).where(_movies.c.id == bindparam("movie_id"))
_GET_MOVIE_PSYCOPG2 = str(
    _GET_MOVIE.compile(dialect=postgresql.psycopg2.dialect())  # type: ignore[no-untyped-call]
)


def _to_domain(row: Sequence[Any]) -> Movie:
    """A movie from a row of ``_movies``' columns in table order (SQLAlchemy or DBAPI)."""
    movie_id, title, plot, genres, cast_ids, currency, amount, created, updated = row
    return Movie(
        id=movie_id,
        title=title,
        plot=plot,
        genres=tuple(genres),
        cast_ids=tuple(cast_ids),
        price=Money(currency, amount),
        create_time=as_utc(created),
        update_time=as_utc(updated),
    )


def _columns(movie: Movie) -> dict[str, Any]:
    return {
        "title": movie.title,
        "plot": movie.plot,
        "genres": list(movie.genres),
        "cast_ids": list(movie.cast_ids),
        "price_currency": movie.price.currency_code,
        "price_amount_minor": movie.price.amount_minor,
        "update_time": movie.update_time,
    }


class SqlAlchemyMovieRepository:
    """Core statements rather than ORM objects: reads are one SELECT and no identity map.

    Works on a Session (writes, in a transaction) or a plain Connection (reads).
    """

    def __init__(self, session: Session | Connection) -> None:
        self._session = session
        self._psycopg2 = isinstance(session, Connection) and session.dialect.name == "postgresql"

    def _write_links(self, movie: Movie) -> None:
        if movie.genres:
            self._session.execute(
                insert(_genres), [{"movie_id": movie.id, "genre": g} for g in movie.genres]
            )
        if movie.cast_ids:
            self._session.execute(
                insert(_casts), [{"movie_id": movie.id, "cast_id": c} for c in movie.cast_ids]
            )

    def add(self, movie: Movie) -> None:
        self._session.execute(
            insert(_movies).values(id=movie.id, create_time=movie.create_time, **_columns(movie))
        )
        self._write_links(movie)

    def get(self, movie_id: str) -> Movie | None:
        if self._psycopg2:
            assert isinstance(self._session, Connection)
            cursor = self._session.connection.cursor()
            try:
                cursor.execute(_GET_MOVIE_PSYCOPG2, {"movie_id": movie_id})
                raw = cursor.fetchone()
            finally:
                cursor.close()
            return _to_domain(raw) if raw else None
        row = self._session.execute(_GET_MOVIE, {"movie_id": movie_id}).first()
        return _to_domain(row) if row else None

    def get_many(self, movie_ids: Sequence[str]) -> list[Movie]:
        rows = self._session.execute(select(_movies).where(_movies.c.id.in_(set(movie_ids))))
        return [_to_domain(r) for r in rows]

    def list_page(
        self, after_id: str | None, limit: int, *, genre: str | None, cast_id: str | None
    ) -> list[Movie]:
        query = select(_movies).order_by(_movies.c.id).limit(limit)
        if after_id is not None:
            query = query.where(_movies.c.id > after_id)
        if genre is not None:
            query = query.where(
                _movies.c.id.in_(select(_genres.c.movie_id).where(_genres.c.genre == genre))
            )
        if cast_id is not None:
            query = query.where(
                _movies.c.id.in_(select(_casts.c.movie_id).where(_casts.c.cast_id == cast_id))
            )
        return [_to_domain(r) for r in self._session.execute(query)]

    def save(self, movie: Movie) -> None:
        self._session.execute(
            update(_movies).where(_movies.c.id == movie.id).values(**_columns(movie))
        )
        self._session.execute(delete(_genres).where(_genres.c.movie_id == movie.id))
        self._session.execute(delete(_casts).where(_casts.c.movie_id == movie.id))
        self._write_links(movie)

    def delete(self, movie_id: str) -> bool:
        # Links first: SQLite enforces ON DELETE CASCADE only with foreign keys on, and
        # being explicit keeps the delete correct whatever the connection's pragmas.
        self._session.execute(delete(_genres).where(_genres.c.movie_id == movie_id))
        self._session.execute(delete(_casts).where(_casts.c.movie_id == movie_id))
        result = self._session.execute(delete(_movies).where(_movies.c.id == movie_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]


class SqlAlchemyMovieUnitOfWork(SqlAlchemyUnitOfWork):
    """Writes in a Session transaction. Every read use case of the movie service is one
    statement, so reads run on a plain connection (autocommit on PostgreSQL): no Session
    bookkeeping and no BEGIN/ROLLBACK round trips."""

    movies: SqlAlchemyMovieRepository

    def __init__(self, sessions: SessionFactories, *, read_only: bool = False) -> None:
        super().__init__(sessions, read_only=read_only)
        self._read_engine: Engine | None = sessions.single_statement_read if read_only else None
        self._connection: Connection | None = None

    def _bind(self, session: Session) -> None:
        self.movies = SqlAlchemyMovieRepository(session)

    def __enter__(self) -> Self:
        if self._read_engine is None:
            return super().__enter__()
        self._connection = self._read_engine.connect()
        self.movies = SqlAlchemyMovieRepository(self._connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is None:
            super().__exit__(exc_type, exc_value, traceback)
            return
        self._connection.close()
        self._connection = None
        raise_if_unavailable(exc_value)
