"""Use cases of the cast service. Each one is one transaction; errors are domain errors.

CreateCast is idempotent (:mod:`services.common.idempotency`): a repeat with the same key
answers the first cast member.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from cinema.v1 import events_pb2
from services.cast.domain import BATCH_MAX, UPDATABLE_FIELDS, Cast, CastFields, check_fields
from services.cast.repository import CastUnitOfWork
from services.common import handled_calls, pagination
from services.common.batch import check_batch_ids, in_request_order
from services.common.clock import Clock, utc_now
from services.common.context import RequestContext
from services.common.errors import NotFound, Violations, require_id
from services.common.idempotency import RequestRecord, create_once, fingerprint, request_key
from services.common.ids import new_id
from services.common.masks import resolve_update_mask

UnitOfWorkFactory = Callable[..., CastUnitOfWork]


def _request_hash(clean: CastFields) -> str:
    """The fingerprint of a CreateCast: its fields as they would be stored."""
    return fingerprint({"name": clean.name, "nationality": clean.nationality})


class CastService:
    """Create, read, change and delete cast members."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._clock = clock

    def create_cast(
        self, fields: CastFields, context: RequestContext, *, request_id: str = ""
    ) -> Cast:
        """A new cast member; on a repeat of the create (same ``request_id``, or the
        gateway's retry of the same call), the cast member the first one made."""
        violations = Violations()
        clean = check_fields(fields, "cast", violations)
        key = request_key(request_id, context.call_id, violations)
        violations.raise_if_any()
        record = RequestRecord(key, _request_hash(clean)) if key else None

        def create() -> Cast:
            now = self._clock()
            cast = Cast(new_id(), clean.name, clean.nationality, now, now)
            with self._uow() as uow:
                uow.casts.add(cast, record)
                uow.commit()
            return cast

        return create_once(record, "cast", find=self._find_by_request_key, create=create)

    def _find_by_request_key(self, key: str) -> tuple[Cast, str] | None:
        with self._uow(read_only=True) as uow:
            return uow.casts.find_by_request_key(key)

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
        self,
        cast_id: str,
        fields: CastFields,
        mask: Sequence[str],
        populated: Sequence[str],
        context: RequestContext,
    ) -> Cast:
        """Change the fields named by ``mask`` (or every populated one); a repeat of the
        call (:mod:`services.common.handled_calls`) answers the cast member as it is now."""
        require_id(cast_id, "cast.id")
        paths = resolve_update_mask(mask, allowed=UPDATABLE_FIELDS, populated=populated)
        violations = Violations()
        clean = check_fields(fields, "cast", violations, only=paths)
        violations.raise_if_any()
        values = {"name": clean.name, "nationality": clean.nationality}
        call = handled_calls.call_of(
            context, "UpdateCast", {"id": cast_id, **{p: values[p] for p in sorted(paths)}}
        )

        def update() -> Cast:
            with self._uow() as uow:
                now = self._clock()
                handled_calls.claim(uow, call, now)
                current = uow.casts.get(cast_id)
                if current is None:
                    raise NotFound("cast", cast_id)
                updated = dataclasses.replace(
                    current,
                    name=clean.name if "name" in paths else current.name,
                    nationality=clean.nationality
                    if "nationality" in paths
                    else current.nationality,
                    update_time=now,
                )
                uow.casts.save(updated)
                uow.commit()
            return updated

        return handled_calls.once(call, self._uow, update, lambda: self.get_cast(cast_id))

    def delete_cast(self, cast_id: str, context: RequestContext) -> None:
        """Delete a cast member; a repeat of the call answers nothing, as the first one did."""
        require_id(cast_id, "id")
        call = handled_calls.call_of(context, "DeleteCast", {"id": cast_id})

        def delete() -> None:
            with self._uow() as uow:
                now = self._clock()
                handled_calls.claim(uow, call, now)
                if not uow.casts.delete(cast_id):
                    raise NotFound("cast", cast_id)
                # The movies that name it drop it when the movie service handles this.
                uow.outbox.add(events_pb2.CastDeleted(cast_id=cast_id), now)
                uow.commit()

        handled_calls.once(call, self._uow, delete, lambda: None)

    def batch_get_casts(self, cast_ids: Sequence[str]) -> list[Cast]:
        """The casts that exist among ``cast_ids``, in request order, each once."""
        check_batch_ids(cast_ids, BATCH_MAX)

        def fetch(ids: Sequence[str]) -> dict[str, Cast]:
            with self._uow(read_only=True) as uow:
                return {c.id: c for c in uow.casts.get_many(ids)}

        return in_request_order(cast_ids, fetch)
