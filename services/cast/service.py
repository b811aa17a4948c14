"""Use cases of the cast service. Each one is one transaction; errors are domain errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from services.cast.domain import BATCH_MAX, UPDATABLE_FIELDS, Cast, CastFields, check_fields
from services.cast.repository import CastUnitOfWork
from services.common import pagination
from services.common.batch import check_batch_ids, in_request_order
from services.common.clock import Clock, utc_now
from services.common.errors import NotFound, Violations, require_id
from services.common.ids import new_id
from services.common.masks import resolve_update_mask

UnitOfWorkFactory = Callable[..., CastUnitOfWork]


class CastService:
    """Create, read, change and delete cast members."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._clock = clock

    def create_cast(self, fields: CastFields) -> Cast:
        violations = Violations()
        clean = check_fields(fields, "cast", violations)
        violations.raise_if_any()
        now = self._clock()
        cast = Cast(new_id(), clean.name, clean.nationality, now, now)
        with self._uow() as uow:
            uow.casts.add(cast)
            uow.commit()
        return cast

    def get_cast(self, cast_id: str) -> Cast:
        require_id(cast_id, "id")
        with self._uow(read_only=True) as uow:
            cast = uow.casts.get(cast_id)
        if cast is None:
            raise NotFound("cast", cast_id)
        return cast

    def list_casts(self, page_size: int, page_token: str) -> pagination.Page[Cast]:
        def fetch(after: str | None, limit: int) -> list[Cast]:
            with self._uow(read_only=True) as uow:
                return uow.casts.list_page(after, limit)

        return pagination.keyset_page(page_size, page_token, {}, fetch)

    def update_cast(
        self, cast_id: str, fields: CastFields, mask: Sequence[str], populated: Sequence[str]
    ) -> Cast:
        require_id(cast_id, "cast.id")
        paths = resolve_update_mask(mask, allowed=UPDATABLE_FIELDS, populated=populated)
        violations = Violations()
        clean = check_fields(fields, "cast", violations, only=paths)
        violations.raise_if_any()
        with self._uow() as uow:
            current = uow.casts.get(cast_id)
            if current is None:
                raise NotFound("cast", cast_id)
            updated = dataclasses.replace(
                current,
                name=clean.name if "name" in paths else current.name,
                nationality=clean.nationality if "nationality" in paths else current.nationality,
                update_time=self._clock(),
            )
            uow.casts.save(updated)
            uow.commit()
        return updated

    def delete_cast(self, cast_id: str) -> None:
        require_id(cast_id, "id")
        with self._uow() as uow:
            if not uow.casts.delete(cast_id):
                raise NotFound("cast", cast_id)
            uow.commit()

    def batch_get_casts(self, cast_ids: Sequence[str]) -> list[Cast]:
        """The casts that exist among ``cast_ids``, in request order, each once."""
        check_batch_ids(cast_ids, BATCH_MAX)

        def fetch(ids: Sequence[str]) -> dict[str, Cast]:
            with self._uow(read_only=True) as uow:
                return {c.id: c for c in uow.casts.get_many(ids)}

        return in_request_order(cast_ids, fetch)
