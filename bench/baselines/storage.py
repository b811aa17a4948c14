"""Database access of the baseline apps, three ways, on Cinema's own tables.

* :class:`AsyncpgMovies` / :class:`AsyncpgCasts`: asyncpg directly, one pool per process,
  statements prepared once per connection by asyncpg's statement cache (the default).
* :class:`SqlAlchemyAsyncMovies` / :class:`SqlAlchemyAsyncCasts`: SQLAlchemy 2 Core on
  ``create_async_engine("postgresql+asyncpg://...")``.
* :class:`SyncMovies` / :class:`SyncCasts`: SQLAlchemy 2 Core on psycopg2
  (``services.common.db.make_engine``, Cinema's engine settings) for ``def`` endpoints,
  which FastAPI runs in its threadpool.

Every variant does what a careful team does and no more: statements built once, reads
that are one statement in autocommit (no BEGIN/ROLLBACK round trips; for SQLAlchemy, a
pool of its own that stays in autocommit, as Cinema's ``make_engine(autocommit=True)``),
a write as one transaction, pools sized once with no overflow (no connection opened
under load). The
tables are Cinema's (``services.movie.models``, ``services.cast.models``), created by
Cinema's Alembic migrations, so a row means the same on both sides.

Reads answer rows as sequences in table column order; :func:`movie_from_row` and
:func:`cast_from_row` turn them into the JSON models.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.baselines import api
from services.cast.domain import Cast as DomainCast
from services.cast.models import Base as CastBase
from services.cast.models import CastRow
from services.common.db import make_engine
from services.movie.domain import Movie as DomainMovie
from services.movie.models import Base as MovieBase
from services.movie.models import MovieCastRow, MovieGenreRow, MovieRow

Row = Sequence[Any]

_movies = MovieBase.metadata.tables[MovieRow.__tablename__]
_movie_genres = MovieBase.metadata.tables[MovieGenreRow.__tablename__]
_movie_casts = MovieBase.metadata.tables[MovieCastRow.__tablename__]
_casts = CastBase.metadata.tables[CastRow.__tablename__]
# The baseline reads the resource's own columns, not Cinema's idempotency bookkeeping.
_BOOKKEEPING = ("request_key", "request_hash")
_movie_columns = [c for c in _movies.c if c.name not in _BOOKKEEPING]
_cast_columns = [c for c in _casts.c if c.name not in _BOOKKEEPING]

_MOVIE_COLUMNS = (
    "id, title, plot, genres, cast_ids, price_currency, price_amount_minor, "
    "create_time, update_time"
)
_CAST_COLUMNS = "id, name, nationality, create_time, update_time"


# --- rows to JSON models -----------------------------------------------------------------------


def movie_from_row(row: Row) -> api.Movie:
    """The JSON model of a ``movies`` row (columns in table order)."""
    movie_id, title, plot, genres, cast_ids, currency, amount, created, updated = row
    return api.Movie(
        id=movie_id,
        title=title,
        plot=plot,
        genres=genres,
        cast_ids=cast_ids,
        price=api.Money(currency_code=currency, amount_minor=str(amount)),
        create_time=created,
        update_time=updated,
    )


def movie_from_domain(movie: DomainMovie) -> api.Movie:
    return api.Movie(
        id=movie.id,
        title=movie.title,
        plot=movie.plot,
        genres=list(movie.genres),
        cast_ids=list(movie.cast_ids),
        price=api.Money(
            currency_code=movie.price.currency_code, amount_minor=str(movie.price.amount_minor)
        ),
        create_time=movie.create_time,
        update_time=movie.update_time,
    )


def cast_from_row(row: Row) -> api.Cast:
    cast_id, name, nationality, created, updated = row
    return api.Cast(
        id=cast_id, name=name, nationality=nationality, create_time=created, update_time=updated
    )


def cast_from_domain(cast: DomainCast) -> api.Cast:
    return api.Cast(
        id=cast.id,
        name=cast.name,
        nationality=cast.nationality,
        create_time=cast.create_time,
        update_time=cast.update_time,
    )


def _movie_values(movie: DomainMovie) -> dict[str, Any]:
    return {
        "id": movie.id,
        "title": movie.title,
        "plot": movie.plot,
        "genres": list(movie.genres),
        "cast_ids": list(movie.cast_ids),
        "price_currency": movie.price.currency_code,
        "price_amount_minor": movie.price.amount_minor,
        "create_time": movie.create_time,
        "update_time": movie.update_time,
    }


def _cast_values(cast: DomainCast) -> dict[str, Any]:
    return {
        "id": cast.id,
        "name": cast.name,
        "nationality": cast.nationality,
        "create_time": cast.create_time,
        "update_time": cast.update_time,
    }


# --- asyncpg -----------------------------------------------------------------------------------


def asyncpg_dsn(database_url: str) -> str:
    """The libpq-style DSN asyncpg wants, from a SQLAlchemy URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def _init_connection(connection: Any) -> None:
    # ``json`` columns (genres, cast_ids) as Python lists both ways; asyncpg's default
    # hands back the text.
    await connection.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def open_asyncpg_pool(database_url: str, size: int) -> Any:
    """An asyncpg pool of exactly ``size`` connections, opened now."""
    asyncpg: Any = importlib.import_module("asyncpg")
    return await asyncpg.create_pool(
        asyncpg_dsn(database_url), min_size=size, max_size=size, init=_init_connection
    )


class AsyncpgMovies:
    """The movie tables over an asyncpg pool."""

    _GET = f"SELECT {_MOVIE_COLUMNS} FROM movies WHERE id = $1"  # noqa: S608 - constants
    _FIRST = f"SELECT {_MOVIE_COLUMNS} FROM movies ORDER BY id LIMIT $1"  # noqa: S608
    _AFTER = f"SELECT {_MOVIE_COLUMNS} FROM movies WHERE id > $1 ORDER BY id LIMIT $2"  # noqa: S608
    _INSERT = f"INSERT INTO movies ({_MOVIE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"  # noqa: S608
    _INSERT_GENRE = "INSERT INTO movie_genres (movie_id, genre) VALUES ($1, $2)"
    _INSERT_CAST = "INSERT INTO movie_casts (movie_id, cast_id) VALUES ($1, $2)"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str, size: int) -> AsyncpgMovies:
        return cls(await open_asyncpg_pool(database_url, size))

    async def get(self, movie_id: str) -> Row | None:
        row: Row | None = await self._pool.fetchrow(self._GET, movie_id)
        return row

    async def page(self, after: str | None, limit: int) -> list[Row]:
        if after is None:
            return list(await self._pool.fetch(self._FIRST, limit))
        return list(await self._pool.fetch(self._AFTER, after, limit))

    async def add(self, movie: DomainMovie) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(self._INSERT, *_movie_values(movie).values())
            if movie.genres:
                await connection.executemany(
                    self._INSERT_GENRE, [(movie.id, g) for g in movie.genres]
                )
            if movie.cast_ids:
                await connection.executemany(
                    self._INSERT_CAST, [(movie.id, c) for c in movie.cast_ids]
                )

    async def close(self) -> None:
        await self._pool.close()


class AsyncpgCasts:
    """The cast table over an asyncpg pool."""

    _GET = f"SELECT {_CAST_COLUMNS} FROM casts WHERE id = $1"  # noqa: S608 - constants
    _MANY = f"SELECT {_CAST_COLUMNS} FROM casts WHERE id = ANY($1::varchar[])"  # noqa: S608
    _FIRST = f"SELECT {_CAST_COLUMNS} FROM casts ORDER BY id LIMIT $1"  # noqa: S608
    _AFTER = f"SELECT {_CAST_COLUMNS} FROM casts WHERE id > $1 ORDER BY id LIMIT $2"  # noqa: S608
    _INSERT = f"INSERT INTO casts ({_CAST_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"  # noqa: S608

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str, size: int) -> AsyncpgCasts:
        return cls(await open_asyncpg_pool(database_url, size))

    async def get(self, cast_id: str) -> Row | None:
        row: Row | None = await self._pool.fetchrow(self._GET, cast_id)
        return row

    async def get_many(self, cast_ids: Sequence[str]) -> list[Row]:
        return list(await self._pool.fetch(self._MANY, list(set(cast_ids))))

    async def page(self, after: str | None, limit: int) -> list[Row]:
        if after is None:
            return list(await self._pool.fetch(self._FIRST, limit))
        return list(await self._pool.fetch(self._AFTER, after, limit))

    async def add(self, cast: DomainCast) -> None:
        await self._pool.execute(self._INSERT, *_cast_values(cast).values())

    async def close(self) -> None:
        await self._pool.close()


# --- SQLAlchemy 2 async (asyncpg underneath) -----------------------------------------------------

_GET_MOVIE = select(*_movie_columns).where(_movies.c.id == bindparam("movie_id"))
_FIRST_MOVIES = select(*_movie_columns).order_by(_movies.c.id).limit(bindparam("limit"))
_MOVIES_AFTER = (
    select(*_movie_columns)
    .where(_movies.c.id > bindparam("after"))
    .order_by(_movies.c.id)
    .limit(bindparam("limit"))
)
_INSERT_MOVIE = insert(_movies)
_INSERT_MOVIE_GENRES = insert(_movie_genres)
_INSERT_MOVIE_CASTS = insert(_movie_casts)
_GET_CAST = select(*_cast_columns).where(_casts.c.id == bindparam("cast_id"))
_MANY_CASTS = select(*_cast_columns).where(_casts.c.id.in_(bindparam("ids", expanding=True)))
_FIRST_CASTS = select(*_cast_columns).order_by(_casts.c.id).limit(bindparam("limit"))
_CASTS_AFTER = (
    select(*_cast_columns)
    .where(_casts.c.id > bindparam("after"))
    .order_by(_casts.c.id)
    .limit(bindparam("limit"))
)
_INSERT_CAST = insert(_casts)


def async_engine(database_url: str, size: int, *, autocommit: bool = False) -> AsyncEngine:
    """An asyncpg-backed SQLAlchemy engine with Cinema's pool rules (no overflow); with
    ``autocommit``, a pool whose connections stay in autocommit (for single-statement
    reads: no isolation switch and no reset per checkout, as ``make_engine`` does)."""
    url = make_url(database_url).set(drivername="postgresql+asyncpg")
    options: dict[str, Any] = (
        {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}
    )
    return create_async_engine(
        url, pool_size=size, max_overflow=0, pool_recycle=1800, hide_parameters=True, **options
    )


def _page_statement(
    first: Any, after_statement: Any, after: str | None
) -> tuple[Any, dict[str, Any]]:
    return (first, {}) if after is None else (after_statement, {"after": after})


class SqlAlchemyAsyncMovies:
    def __init__(self, engine: AsyncEngine, reads: AsyncEngine) -> None:
        self._engine = engine
        self._reads = reads

    @classmethod
    async def open(cls, database_url: str, size: int) -> SqlAlchemyAsyncMovies:
        return cls(
            async_engine(database_url, size), async_engine(database_url, size, autocommit=True)
        )

    async def get(self, movie_id: str) -> Row | None:
        async with self._reads.connect() as connection:
            result = await connection.execute(_GET_MOVIE, {"movie_id": movie_id})
            return result.first()

    async def page(self, after: str | None, limit: int) -> list[Row]:
        statement, params = _page_statement(_FIRST_MOVIES, _MOVIES_AFTER, after)
        async with self._reads.connect() as connection:
            result = await connection.execute(statement, {**params, "limit": limit})
            return list(result.all())

    async def add(self, movie: DomainMovie) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(_INSERT_MOVIE, _movie_values(movie))
            if movie.genres:
                await connection.execute(
                    _INSERT_MOVIE_GENRES, [{"movie_id": movie.id, "genre": g} for g in movie.genres]
                )
            if movie.cast_ids:
                await connection.execute(
                    _INSERT_MOVIE_CASTS,
                    [{"movie_id": movie.id, "cast_id": c} for c in movie.cast_ids],
                )

    async def close(self) -> None:
        await self._reads.dispose()
        await self._engine.dispose()


class SqlAlchemyAsyncCasts:
    def __init__(self, engine: AsyncEngine, reads: AsyncEngine) -> None:
        self._engine = engine
        self._reads = reads

    @classmethod
    async def open(cls, database_url: str, size: int) -> SqlAlchemyAsyncCasts:
        return cls(
            async_engine(database_url, size), async_engine(database_url, size, autocommit=True)
        )

    async def get(self, cast_id: str) -> Row | None:
        async with self._reads.connect() as connection:
            return (await connection.execute(_GET_CAST, {"cast_id": cast_id})).first()

    async def get_many(self, cast_ids: Sequence[str]) -> list[Row]:
        async with self._reads.connect() as connection:
            result = await connection.execute(_MANY_CASTS, {"ids": list(set(cast_ids))})
            return list(result.all())

    async def page(self, after: str | None, limit: int) -> list[Row]:
        statement, params = _page_statement(_FIRST_CASTS, _CASTS_AFTER, after)
        async with self._reads.connect() as connection:
            result = await connection.execute(statement, {**params, "limit": limit})
            return list(result.all())

    async def add(self, cast: DomainCast) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(_INSERT_CAST, _cast_values(cast))

    async def close(self) -> None:
        await self._reads.dispose()
        await self._engine.dispose()


# --- SQLAlchemy 2 Core on psycopg2, for def endpoints ---------------------------------------------


class SyncMovies:
    def __init__(self, engine: Engine, reads: Engine) -> None:
        self._engine = engine
        self._reads = reads

    @classmethod
    def open(cls, database_url: str, size: int) -> SyncMovies:
        return cls(
            make_engine(database_url, pool_size=size),
            make_engine(database_url, pool_size=size, autocommit=True),
        )

    def get(self, movie_id: str) -> Row | None:
        with self._reads.connect() as connection:
            return connection.execute(_GET_MOVIE, {"movie_id": movie_id}).first()

    def page(self, after: str | None, limit: int) -> list[Row]:
        statement, params = _page_statement(_FIRST_MOVIES, _MOVIES_AFTER, after)
        with self._reads.connect() as connection:
            return list(connection.execute(statement, {**params, "limit": limit}).all())

    def add(self, movie: DomainMovie) -> None:
        with self._engine.begin() as connection:
            connection.execute(_INSERT_MOVIE, _movie_values(movie))
            if movie.genres:
                connection.execute(
                    _INSERT_MOVIE_GENRES, [{"movie_id": movie.id, "genre": g} for g in movie.genres]
                )
            if movie.cast_ids:
                connection.execute(
                    _INSERT_MOVIE_CASTS,
                    [{"movie_id": movie.id, "cast_id": c} for c in movie.cast_ids],
                )

    def close(self) -> None:
        self._reads.dispose()
        self._engine.dispose()


class SyncCasts:
    def __init__(self, engine: Engine, reads: Engine) -> None:
        self._engine = engine
        self._reads = reads

    @classmethod
    def open(cls, database_url: str, size: int) -> SyncCasts:
        return cls(
            make_engine(database_url, pool_size=size),
            make_engine(database_url, pool_size=size, autocommit=True),
        )

    def get(self, cast_id: str) -> Row | None:
        with self._reads.connect() as connection:
            return connection.execute(_GET_CAST, {"cast_id": cast_id}).first()

    def get_many(self, cast_ids: Sequence[str]) -> list[Row]:
        with self._reads.connect() as connection:
            return list(connection.execute(_MANY_CASTS, {"ids": list(set(cast_ids))}).all())

    def page(self, after: str | None, limit: int) -> list[Row]:
        statement, params = _page_statement(_FIRST_CASTS, _CASTS_AFTER, after)
        with self._reads.connect() as connection:
            return list(connection.execute(statement, {**params, "limit": limit}).all())

    def add(self, cast: DomainCast) -> None:
        with self._engine.begin() as connection:
            connection.execute(_INSERT_CAST, _cast_values(cast))

    def close(self) -> None:
        self._reads.dispose()
        self._engine.dispose()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
