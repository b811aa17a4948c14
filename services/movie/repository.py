"""Persistence of movies: the repository protocol and its SQLAlchemy implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from services.common.db import SessionFactories, SqlAlchemyUnitOfWork, UnitOfWork, as_utc
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


def _to_domain(row: Any) -> Movie:
    return Movie(
        id=row.id,
        title=row.title,
        plot=row.plot,
        genres=tuple(row.genres),
        cast_ids=tuple(row.cast_ids),
        price=Money(row.price_currency, row.price_amount_minor),
        create_time=as_utc(row.create_time),
        update_time=as_utc(row.update_time),
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
    """Core statements rather than ORM objects: reads are one SELECT and no identity map."""

    def __init__(self, session: Session) -> None:
        self._session = session

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
        row = self._session.execute(select(_movies).where(_movies.c.id == movie_id)).first()
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
    movies: SqlAlchemyMovieRepository

    def __init__(self, sessions: SessionFactories, *, read_only: bool = False) -> None:
        super().__init__(sessions, read_only=read_only)

    def _bind(self, session: Session) -> None:
        self.movies = SqlAlchemyMovieRepository(session)
