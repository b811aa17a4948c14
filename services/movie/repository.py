"""Persistence of movies: the repository protocol and its SQLAlchemy implementation.

Movies are read without their ``request_key`` and ``request_hash``: only CreateMovie's
idempotency check needs them (:meth:`SqlAlchemyMovieRepository.find_by_request_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from services.common.clock import as_utc
from services.common.db import CoreUnitOfWork, UnitOfWork
from services.common.errors import Unavailable
from services.common.idempotency import DuplicateRequestKey, RequestRecord, is_unique_violation
from services.common.money import Money
from services.common.tombstones import Tombstones, TombstoneStore
from services.movie.domain import Movie
from services.movie.models import (
    REQUEST_KEY_INDEX,
    Base,
    MovieCastRow,
    MovieGenreRow,
    MovieRow,
)


class MovieRepository(Protocol):
    def add(self, movie: Movie, request: RequestRecord | None = None) -> None:
        """Store a new movie, with the key and fingerprint of the create that made it;
        :class:`DuplicateRequestKey` when another movie has that key."""
        ...

    def find_by_request_key(self, key: str) -> tuple[Movie, str] | None:
        """The movie stored with the request key ``key`` and its request's fingerprint."""
        ...

    def get(self, movie_id: str) -> Movie | None: ...
    def get_many(self, movie_ids: Sequence[str]) -> list[Movie]: ...
    def list_page(
        self, after_id: str | None, limit: int, *, genre: str | None, cast_id: str | None
    ) -> list[Movie]: ...
    def save(self, movie: Movie) -> None: ...
    def delete(self, movie_id: str) -> bool: ...
    def with_cast(self, cast_id: str) -> list[Movie]:
        """Every movie whose cast names ``cast_id``, locked until the transaction ends."""
        ...


class MovieUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the movie tables."""

    @property
    def movies(self) -> MovieRepository: ...
    @property
    def tombstones(self) -> TombstoneStore: ...


_movies = Base.metadata.tables[MovieRow.__tablename__]
_genres = Base.metadata.tables[MovieGenreRow.__tablename__]
_casts = Base.metadata.tables[MovieCastRow.__tablename__]
# What a Movie is made of, in table order (see _to_domain): every column but the two
# that only the idempotency check reads.
_MOVIE_COLUMNS = [c for c in _movies.c if c.name not in ("request_key", "request_hash")]


# GetMovie is the hot path. The statement is built once, so SQLAlchemy finds its compiled
# form in the cache instead of rebuilding it per call; on PostgreSQL the same compiled SQL
# runs straight on the pooled DBAPI cursor, which skips SQLAlchemy's per-execute work
# (cache key, result processing): about a quarter of GetMovie's CPU (docs/benchmarks.md).
_GET_MOVIE = select(*_MOVIE_COLUMNS).where(_movies.c.id == bindparam("movie_id"))
_GET_MOVIE_PSYCOPG2 = str(
    _GET_MOVIE.compile(dialect=postgresql.psycopg2.dialect())  # type: ignore[no-untyped-call]
)
# ... and as a prepared statement, made once per pooled connection: PostgreSQL then skips
# parsing and planning the query on every call (a third of its CPU per GetMovie). A
# statement pooler in transaction mode (PgBouncer) does not keep prepared statements;
# point DATABASE_URL at PostgreSQL itself or at a session-mode pool.
_PREPARED = "cinema_get_movie"
_PREPARE_GET_MOVIE = f"PREPARE {_PREPARED} (varchar) AS " + _GET_MOVIE_PSYCOPG2.replace(
    "%(movie_id)s", "$1"
)
_EXECUTE_GET_MOVIE = f"EXECUTE {_PREPARED} (%(movie_id)s)"


# Writes are built once too: CreateMovie's three INSERTs (the movie and its two link
# tables) were rebuilt per call, and SQLAlchemy's cache-key walk over their VALUES showed
# in CreateMovie's profile. Executed with parameter dicts, they compile once and stay
# in the compiled cache.
_INSERT_MOVIE = insert(_movies)
_INSERT_GENRES = insert(_genres)
_INSERT_CASTS = insert(_casts)
_UPDATE_MOVIE = update(_movies).where(_movies.c.id == bindparam("movie_id"))
_DELETE_GENRES = delete(_genres).where(_genres.c.movie_id == bindparam("movie_id"))
_DELETE_CASTS = delete(_casts).where(_casts.c.movie_id == bindparam("movie_id"))
_DELETE_MOVIE = delete(_movies).where(_movies.c.id == bindparam("movie_id"))
# BatchGetMovies (every CreateOrder prices its lines with it): any number of ids.
_GET_MOVIES = select(*_MOVIE_COLUMNS).where(
    _movies.c.id.in_(bindparam("movie_ids", expanding=True))
)
# CreateMovie's idempotency check: the movie stored with a key, and its fingerprint last.
_FIND_BY_REQUEST_KEY = select(*_MOVIE_COLUMNS, _movies.c.request_hash).where(
    _movies.c.request_key == bindparam("request_key")
)


def _to_domain(row: Sequence[Any]) -> Movie:
    """A movie from a row of ``_MOVIE_COLUMNS`` (SQLAlchemy or DBAPI)."""
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
    """Core statements rather than ORM objects: reads are one SELECT and no identity map."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._psycopg2 = connection.dialect.name == "postgresql"

    def _write_links(self, movie: Movie) -> None:
        if movie.genres:
            self._connection.execute(
                _INSERT_GENRES, [{"movie_id": movie.id, "genre": g} for g in movie.genres]
            )
        if movie.cast_ids:
            self._connection.execute(
                _INSERT_CASTS, [{"movie_id": movie.id, "cast_id": c} for c in movie.cast_ids]
            )

    def add(self, movie: Movie, request: RequestRecord | None = None) -> None:
        try:
            self._connection.execute(
                _INSERT_MOVIE,
                {
                    "id": movie.id,
                    "create_time": movie.create_time,
                    "request_key": request.key.stored if request else None,
                    "request_hash": request.request_hash if request else None,
                    **_columns(movie),
                },
            )
        except IntegrityError as error:
            if is_unique_violation(
                error, constraint=REQUEST_KEY_INDEX, column="movies.request_key"
            ):
                raise DuplicateRequestKey("movies.request_key") from error
            raise
        self._write_links(movie)

    def find_by_request_key(self, key: str) -> tuple[Movie, str] | None:
        row = self._connection.execute(_FIND_BY_REQUEST_KEY, {"request_key": key}).first()
        return (_to_domain(row[:-1]), row[-1]) if row else None

    def get(self, movie_id: str) -> Movie | None:
        if self._psycopg2:
            # The pooled DBAPI connection, in this unit of work's transaction if it has one.
            dbapi = self._connection.dialect.loaded_dbapi
            pooled = self._connection.connection  # its .info lives as long as the connection
            cursor = pooled.cursor()
            try:
                if not pooled.info.get(_PREPARED):
                    cursor.execute(_PREPARE_GET_MOVIE)
                    pooled.info[_PREPARED] = True
                cursor.execute(_EXECUTE_GET_MOVIE, {"movie_id": movie_id})
                raw = cursor.fetchone()
            except (dbapi.OperationalError, dbapi.InterfaceError) as error:
                # SQLAlchemy's execute would see the broken connection and drop it from the
                # pool; on the raw cursor that is ours to do, or the next call gets it back.
                self._connection.invalidate(error)
                raise Unavailable("the database is unavailable") from error
            finally:
                cursor.close()
            return _to_domain(raw) if raw else None
        row = self._connection.execute(_GET_MOVIE, {"movie_id": movie_id}).first()
        return _to_domain(row) if row else None

    def get_many(self, movie_ids: Sequence[str]) -> list[Movie]:
        rows = self._connection.execute(_GET_MOVIES, {"movie_ids": sorted(set(movie_ids))})
        return [_to_domain(r) for r in rows]

    def list_page(
        self, after_id: str | None, limit: int, *, genre: str | None, cast_id: str | None
    ) -> list[Movie]:
        query = select(*_MOVIE_COLUMNS).order_by(_movies.c.id).limit(limit)
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
        return [_to_domain(r) for r in self._connection.execute(query)]

    def with_cast(self, cast_id: str) -> list[Movie]:
        query = (
            select(*_MOVIE_COLUMNS)
            .where(_movies.c.id.in_(select(_casts.c.movie_id).where(_casts.c.cast_id == cast_id)))
            .order_by(_movies.c.id)
            .with_for_update()
        )
        return [_to_domain(r) for r in self._connection.execute(query)]

    def save(self, movie: Movie) -> None:
        self._connection.execute(_UPDATE_MOVIE, {"movie_id": movie.id, **_columns(movie)})
        self._connection.execute(_DELETE_GENRES, {"movie_id": movie.id})
        self._connection.execute(_DELETE_CASTS, {"movie_id": movie.id})
        self._write_links(movie)

    def delete(self, movie_id: str) -> bool:
        # Links first: SQLite enforces ON DELETE CASCADE only with foreign keys on, and
        # being explicit keeps the delete correct whatever the connection's pragmas.
        self._connection.execute(_DELETE_GENRES, {"movie_id": movie_id})
        self._connection.execute(_DELETE_CASTS, {"movie_id": movie_id})
        result = self._connection.execute(_DELETE_MOVIE, {"movie_id": movie_id})
        return bool(result.rowcount)


class SqlAlchemyMovieUnitOfWork(CoreUnitOfWork):
    """Movie reads are each one statement; writes are one transaction."""

    movies: SqlAlchemyMovieRepository

    @property
    def tombstones(self) -> Tombstones:
        """What other services deleted (built on first use: a read never pays for it)."""
        return Tombstones(self.connection)

    def _bind(self, connection: Connection) -> None:
        self.movies = SqlAlchemyMovieRepository(connection)
