"""The baseline cast service: FastAPI, one uvicorn process, its own PostgreSQL database.

Run by :mod:`bench.baselines.runner` as
``uvicorn --factory bench.baselines.cast_app:create_app``. Routes (Cinema's JSON routes):

* ``GET /api/v1/casts/{id}``, ``GET /api/v1/casts?pageSize=N&pageToken=T``.
* ``POST /api/v1/casts`` (admin token), validated with ``services.cast.domain.check_fields``.
* ``GET /api/v1/casts:batchGet?ids=A&ids=B``: the members that exist among the ids, each
  once, in request order, in ONE query (what the movie app calls per CreateMovie).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Query

from bench.baselines import api, storage
from services.cast.domain import BATCH_MAX, CastFields, check_fields
from services.cast.domain import Cast as DomainCast
from services.common import errors, pagination
from services.common.batch import check_batch_ids
from services.common.ids import new_id

_PAGE_FILTERS: dict[str, str] = {}

PageSize = Annotated[int, Query(alias="pageSize")]
PageToken = Annotated[str, Query(alias="pageToken")]
Ids = Annotated[list[str], Query()]


def new_cast(body: api.CastIn) -> DomainCast:
    """A validated new cast member (Cinema's rules, field paths and messages)."""
    violations = errors.Violations()
    clean = check_fields(CastFields(body.name, body.nationality), "cast", violations)
    violations.raise_if_any()
    now = storage.utc_now()
    return DomainCast(new_id(), clean.name, clean.nationality, now, now)


def cast_page(rows: list[storage.Row], limit: int) -> api.CastList:
    token = ""
    if len(rows) > limit:
        rows = rows[:limit]
        token = pagination.encode_token(str(rows[-1][0]), _PAGE_FILTERS)
    return api.CastList(casts=[storage.cast_from_row(r) for r in rows], next_page_token=token)


def in_request_order(ids: list[str], rows: list[storage.Row]) -> api.CastBatch:
    found = {str(r[0]): r for r in rows}
    return api.CastBatch(
        casts=[storage.cast_from_row(found[i]) for i in dict.fromkeys(ids) if i in found]
    )


@dataclass
class _Resources:
    casts: Any = None


def create_app(settings: api.Settings | None = None) -> FastAPI:
    """The cast app for ``settings`` (default: from the environment)."""
    settings = settings or api.Settings.from_env()
    if settings.db_access == "sync":
        return _sync_app(settings)
    return _async_app(settings)


def _async_app(settings: api.Settings) -> FastAPI:
    store_type = (
        storage.AsyncpgCasts if settings.db_access == "asyncpg" else storage.SqlAlchemyAsyncCasts
    )
    resources = _Resources()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources.casts = await store_type.open(settings.database_url, settings.pool_size)
        try:
            yield
        finally:
            await resources.casts.close()

    app = api.new_app(settings, "cast", lifespan)

    @app.get("/api/v1/casts:batchGet", **api.RESPONSE_OPTIONS)
    async def batch_get_casts(ids: Ids = []) -> api.CastBatch:  # noqa: B006 - FastAPI copies it
        check_batch_ids(ids, BATCH_MAX)
        rows = await resources.casts.get_many(ids) if ids else []
        return in_request_order(ids, rows)

    @app.get("/api/v1/casts/{cast_id}", **api.RESPONSE_OPTIONS)
    async def get_cast(cast_id: str) -> api.Cast:
        row = await resources.casts.get(cast_id)
        if row is None:
            raise errors.NotFound("cast", cast_id)
        return storage.cast_from_row(row)

    @app.get("/api/v1/casts", **api.RESPONSE_OPTIONS)
    async def list_casts(page_size: PageSize = 0, page_token: PageToken = "") -> api.CastList:
        limit = pagination.page_size(page_size)
        after = pagination.decode_token(page_token, _PAGE_FILTERS)
        return cast_page(await resources.casts.page(after, limit + 1), limit)

    @app.post("/api/v1/casts", **api.RESPONSE_OPTIONS)
    async def create_cast(body: api.CastIn, admin: api.Admin) -> api.Cast:
        cast = new_cast(body)
        await resources.casts.add(cast)
        return storage.cast_from_domain(cast)

    return app


def _sync_app(settings: api.Settings) -> FastAPI:
    resources = _Resources()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources.casts = storage.SyncCasts.open(settings.database_url, settings.pool_size)
        try:
            yield
        finally:
            resources.casts.close()

    app = api.new_app(settings, "cast", lifespan)

    @app.get("/api/v1/casts:batchGet", **api.RESPONSE_OPTIONS)
    def batch_get_casts(ids: Ids = []) -> api.CastBatch:  # noqa: B006 - FastAPI copies it
        check_batch_ids(ids, BATCH_MAX)
        rows = resources.casts.get_many(ids) if ids else []
        return in_request_order(ids, rows)

    @app.get("/api/v1/casts/{cast_id}", **api.RESPONSE_OPTIONS)
    def get_cast(cast_id: str) -> api.Cast:
        row = resources.casts.get(cast_id)
        if row is None:
            raise errors.NotFound("cast", cast_id)
        return storage.cast_from_row(row)

    @app.get("/api/v1/casts", **api.RESPONSE_OPTIONS)
    def list_casts(page_size: PageSize = 0, page_token: PageToken = "") -> api.CastList:
        limit = pagination.page_size(page_size)
        after = pagination.decode_token(page_token, _PAGE_FILTERS)
        return cast_page(resources.casts.page(after, limit + 1), limit)

    @app.post("/api/v1/casts", **api.RESPONSE_OPTIONS)
    def create_cast(body: api.CastIn, admin: api.Admin) -> api.Cast:
        cast = new_cast(body)
        resources.casts.add(cast)
        return storage.cast_from_domain(cast)

    return app
