"""The baseline movie service: FastAPI, one uvicorn process, its own PostgreSQL database.

Run by :mod:`bench.baselines.runner` as
``uvicorn --factory bench.baselines.movie_app:create_app`` with the settings of
:class:`bench.baselines.api.Settings` in the environment. Routes (Cinema's JSON routes):

* ``GET /api/v1/movies/{id}``: the movie, or 404.
* ``GET /api/v1/movies?pageSize=N&pageToken=T``: a page ordered by id.
* ``POST /api/v1/movies`` (admin token): validated with Cinema's own rules
  (``services.movie.domain.check_fields``), its cast ids checked with ONE
  ``GET /api/v1/casts:batchGet`` through nginx on a shared keep-alive
  ``aiohttp.ClientSession`` (400 naming every unknown id), then one transaction: the movie
  row and its link rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import anyio.from_thread
from fastapi import FastAPI, Query

from bench.baselines import api, storage
from services.common import errors, pagination
from services.common.ids import new_id
from services.common.money import Money
from services.movie.domain import Movie as DomainMovie
from services.movie.domain import MovieFields, check_fields, unknown_cast_violations

#: The path of the cast service's batch read (Cinema's transcoded BatchGetCasts route).
CAST_BATCH_PATH = "/api/v1/casts:batchGet"
_PAGE_FILTERS = {"genre": "", "cast_id": ""}
#: Keep-alive connections to nginx: one per concurrent CreateMovie is plenty.
_CAST_CONNECTIONS = 64


def _unavailable(what: str) -> errors.Unavailable:
    return errors.Unavailable(f"the cast service is unavailable: {what}")


class CastClient:
    """The cast service over HTTP: one batched request per check, keep-alive to nginx.

    aiohttp rather than httpx: measured here on the same batch request through nginx,
    httpx's AsyncClient cost 2.2-2.8 ms of client CPU per request and aiohttp's
    ClientSession 0.27-0.32 ms (both with a shared, pooled, keep-alive client), and a
    client that costs more than the server it calls would make the baseline a strawman.
    """

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self._session = aiohttp.ClientSession(
            base_url=base_url,
            connector=aiohttp.TCPConnector(limit=_CAST_CONNECTIONS, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def known(self, cast_ids: Sequence[str]) -> set[str]:
        """The ids among ``cast_ids`` the cast service knows, in ONE request."""
        params = [("ids", cast_id) for cast_id in cast_ids]
        try:
            async with self._session.get(CAST_BATCH_PATH, params=params) as reply:
                if reply.status != 200:
                    raise _unavailable(f"HTTP {reply.status}")
                payload = await reply.json()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _unavailable(type(error).__name__) from error
        return {str(c["id"]) for c in payload.get("casts", [])}

    async def close(self) -> None:
        await self._session.close()


# --- the use case, minus I/O -------------------------------------------------------------------


def checked_fields(body: api.MovieIn) -> MovieFields:
    """Cinema's validation of a new movie (same rules, same field paths and messages)."""
    price = Money(body.price.currency_code, body.price.amount_minor) if body.price else None
    violations = errors.Violations()
    clean = check_fields(
        MovieFields(body.title, body.plot, body.genres, body.cast_ids, price), "movie", violations
    )
    violations.raise_if_any()
    return clean


def check_known(cast_ids: Sequence[str], known: set[str]) -> None:
    """400 naming every cast id the cast service does not know."""
    violations = errors.Violations()
    unknown_cast_violations(cast_ids, known, "movie", violations)
    violations.raise_if_any()


def new_movie(clean: MovieFields) -> DomainMovie:
    return DomainMovie.new(new_id(), clean, storage.utc_now())


def movie_page(rows: list[storage.Row], limit: int) -> api.MovieList:
    """One page from ``limit + 1`` rows (the extra row says whether another page follows)."""
    token = ""
    if len(rows) > limit:
        rows = rows[:limit]
        token = pagination.encode_token(str(rows[-1][0]), _PAGE_FILTERS)
    return api.MovieList(movies=[storage.movie_from_row(r) for r in rows], next_page_token=token)


PageSize = Annotated[int, Query(alias="pageSize")]
PageToken = Annotated[str, Query(alias="pageToken")]


# --- the apps ----------------------------------------------------------------------------------


@dataclass
class _Resources:
    """What the lifespan opens and the routes use."""

    movies: Any = None
    casts: Any = None


def create_app(settings: api.Settings | None = None) -> FastAPI:
    """The movie app for ``settings`` (default: from the environment)."""
    settings = settings or api.Settings.from_env()
    if not settings.cast_url:
        raise api.SettingsError("BASELINE_CAST_URL is required (the cast service, via nginx)")
    if settings.db_access == "sync":
        return _sync_app(settings)
    return _async_app(settings)


def _async_app(settings: api.Settings) -> FastAPI:
    store_type = (
        storage.AsyncpgMovies if settings.db_access == "asyncpg" else storage.SqlAlchemyAsyncMovies
    )
    resources = _Resources()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources.movies = await store_type.open(settings.database_url, settings.pool_size)
        resources.casts = CastClient(settings.cast_url)
        try:
            yield
        finally:
            await resources.casts.close()
            await resources.movies.close()

    app = api.new_app(settings, "movie", lifespan)

    @app.get("/api/v1/movies/{movie_id}", **api.RESPONSE_OPTIONS)
    async def get_movie(movie_id: str) -> api.Movie:
        row = await resources.movies.get(movie_id)
        if row is None:
            raise errors.NotFound("movie", movie_id)
        return storage.movie_from_row(row)

    @app.get("/api/v1/movies", **api.RESPONSE_OPTIONS)
    async def list_movies(page_size: PageSize = 0, page_token: PageToken = "") -> api.MovieList:
        limit = pagination.page_size(page_size)
        after = pagination.decode_token(page_token, _PAGE_FILTERS)
        return movie_page(await resources.movies.page(after, limit + 1), limit)

    @app.post("/api/v1/movies", **api.RESPONSE_OPTIONS)
    async def create_movie(body: api.MovieIn, admin: api.Admin) -> api.Movie:
        clean = checked_fields(body)
        if clean.cast_ids:
            check_known(clean.cast_ids, await resources.casts.known(clean.cast_ids))
        movie = new_movie(clean)
        await resources.movies.add(movie)
        return storage.movie_from_domain(movie)

    return app


def _sync_app(settings: api.Settings) -> FastAPI:
    resources = _Resources()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources.movies = storage.SyncMovies.open(settings.database_url, settings.pool_size)
        resources.casts = CastClient(settings.cast_url)
        try:
            yield
        finally:
            await resources.casts.close()
            resources.movies.close()

    app = api.new_app(settings, "movie", lifespan)

    @app.get("/api/v1/movies/{movie_id}", **api.RESPONSE_OPTIONS)
    def get_movie(movie_id: str) -> api.Movie:
        row = resources.movies.get(movie_id)
        if row is None:
            raise errors.NotFound("movie", movie_id)
        return storage.movie_from_row(row)

    @app.get("/api/v1/movies", **api.RESPONSE_OPTIONS)
    def list_movies(page_size: PageSize = 0, page_token: PageToken = "") -> api.MovieList:
        limit = pagination.page_size(page_size)
        after = pagination.decode_token(page_token, _PAGE_FILTERS)
        return movie_page(resources.movies.page(after, limit + 1), limit)

    @app.post("/api/v1/movies", **api.RESPONSE_OPTIONS)
    def create_movie(body: api.MovieIn, admin: api.Admin) -> api.Movie:
        clean = checked_fields(body)
        if clean.cast_ids:
            # The one HTTP client, on the event loop: FastAPI's documented way for a def
            # endpoint (a worker thread) to await something.
            known = anyio.from_thread.run(resources.casts.known, clean.cast_ids)
            check_known(clean.cast_ids, known)
        movie = new_movie(clean)
        resources.movies.add(movie)
        return storage.movie_from_domain(movie)

    return app
