"""Use cases of the movie service. Each one is one transaction; checks against the cast
service happen before the transaction opens, so a cast outage writes nothing, and the
transaction then refuses a cast id the consumer learnt was deleted in the meantime
(services/common/tombstones.py).

CreateMovie is idempotent (:mod:`services.common.idempotency`): a repeat with the same
key answers the first movie from the database before the cast service is asked, so it
succeeds even when the cast service is down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from services.common import handled_calls, pagination
from services.common.batch import check_batch_ids, in_request_order
from services.common.clock import Clock, utc_now
from services.common.context import RequestContext
from services.common.errors import NotFound, Violations, require_id
from services.common.idempotency import RequestRecord, create_once, fingerprint, request_key
from services.common.ids import new_id
from services.common.masks import resolve_update_mask
from services.movie import events
from services.movie.domain import (
    BATCH_MAX,
    UPDATABLE_FIELDS,
    CastMember,
    Movie,
    MovieFields,
    MovieView,
    MovieWithCast,
    check_fields,
    unknown_cast_violations,
)
from services.movie.repository import MovieUnitOfWork

UnitOfWorkFactory = Callable[..., MovieUnitOfWork]


def _request_hash(clean: MovieFields) -> str:
    """The fingerprint of a CreateMovie: every field as it would be stored. Genres and cast
    ids keep their order, which the movie keeps too."""
    assert clean.price is not None  # check_fields requires it
    return fingerprint(
        {
            "title": clean.title,
            "plot": clean.plot,
            "genres": list(clean.genres),
            "cast_ids": list(clean.cast_ids),
            "price": [clean.price.currency_code, clean.price.amount_minor],
        }
    )


def _changes(clean: MovieFields, paths: Collection[str]) -> dict[str, object]:
    """The fields an update sets, as they would be stored (an update's fingerprint)."""
    values: dict[str, object] = {
        "title": clean.title,
        "plot": clean.plot,
        "genres": list(clean.genres),
        "cast_ids": list(clean.cast_ids),
        "price": [clean.price.currency_code, clean.price.amount_minor] if clean.price else None,
    }
    return {path: values[path] for path in sorted(paths)}


#: The tombstones' kind for cast members (services/common/tombstones.py).
CAST = "cast"


def _refuse_deleted_casts(uow: MovieUnitOfWork, cast_ids: Sequence[str]) -> None:
    """INVALID_ARGUMENT, as for an unknown cast id, when the consumer has learnt that one
    of ``cast_ids`` was deleted since the cast service was asked (in the write's
    transaction: services/common/tombstones.py)."""
    buried = {cast_id for _, cast_id in uow.tombstones.buried({CAST: cast_ids})}
    if buried:
        violations = Violations()
        unknown_cast_violations(cast_ids, set(cast_ids) - buried, "movie", violations)
        violations.raise_if_any()


class CastDirectory(Protocol):
    """The movie service's view of the cast service."""

    def get_many(self, cast_ids: Sequence[str], context: RequestContext) -> list[CastMember]:
        """The cast members that exist among ``cast_ids``, in ONE call."""
        ...


class MovieService:
    """Create, read, change and delete movies."""

    def __init__(
        self, uow: UnitOfWorkFactory, casts: CastDirectory, clock: Clock = utc_now
    ) -> None:
        self._uow = uow
        self._casts = casts
        self._clock = clock

    def _check_cast_ids(self, cast_ids: Sequence[str], context: RequestContext) -> None:
        if not cast_ids:
            return
        known = {c.id for c in self._casts.get_many(cast_ids, context)}
        violations = Violations()
        unknown_cast_violations(cast_ids, known, "movie", violations)
        violations.raise_if_any()

    def create_movie(
        self, fields: MovieFields, context: RequestContext, *, request_id: str = ""
    ) -> Movie:
        """A new movie; on a repeat of the create (same ``request_id``, or the gateway's
        retry of the same call), the movie the first one made."""
        violations = Violations()
        clean = check_fields(fields, "movie", violations)
        key = request_key(request_id, context.call_id, violations)
        violations.raise_if_any()
        record = RequestRecord(key, _request_hash(clean)) if key else None

        def create() -> Movie:
            self._check_cast_ids(clean.cast_ids, context)
            movie = Movie.new(new_id(), clean, self._clock())
            with self._uow() as uow:
                _refuse_deleted_casts(uow, clean.cast_ids)
                uow.movies.add(movie, record)
                uow.commit()
            return movie

        return create_once(record, "movie", find=self._find_by_request_key, create=create)

    def _find_by_request_key(self, key: str) -> tuple[Movie, str] | None:
        with self._uow(read_only=True) as uow:
            return uow.movies.find_by_request_key(key)

    def get_movie(self, movie_id: str, view: MovieView, context: RequestContext) -> MovieWithCast:
        require_id(movie_id, "id")
        movie = self._get(movie_id)
        if view is MovieView.BASIC or not movie.cast_ids:
            return MovieWithCast(movie)
        found = {c.id: c for c in self._casts.get_many(movie.cast_ids, context)}
        return MovieWithCast(movie, tuple(found[i] for i in movie.cast_ids if i in found))

    def list_movies(
        self, page_size: int, page_token: str, *, genre: str, cast_id: str
    ) -> pagination.Page[Movie]:
        filters = {"genre": genre.strip(), "cast_id": cast_id.strip()}

        def fetch(after: str | None, limit: int) -> list[Movie]:
            with self._uow(read_only=True) as uow:
                return uow.movies.list_page(
                    after, limit, genre=filters["genre"] or None, cast_id=filters["cast_id"] or None
                )

        return pagination.keyset_page(page_size, page_token, filters, fetch)

    def update_movie(
        self,
        movie_id: str,
        fields: MovieFields,
        mask: Sequence[str],
        populated: Sequence[str],
        context: RequestContext,
    ) -> Movie:
        """Change the fields named by ``mask`` (or every populated one); a repeat of the
        call (:mod:`services.common.handled_calls`) answers the movie as it is now."""
        require_id(movie_id, "movie.id")
        paths = resolve_update_mask(mask, allowed=UPDATABLE_FIELDS, populated=populated)
        violations = Violations()
        clean = check_fields(fields, "movie", violations, only=paths)
        violations.raise_if_any()
        call = handled_calls.call_of(
            context, "UpdateMovie", {"id": movie_id, **_changes(clean, paths)}
        )

        def update() -> Movie:
            if "cast_ids" in paths:
                self._check_cast_ids(clean.cast_ids, context)
            with self._uow() as uow:
                now = self._clock()
                handled_calls.claim(uow, call, now)
                if "cast_ids" in paths:
                    _refuse_deleted_casts(uow, clean.cast_ids)
                current = uow.movies.get(movie_id)
                if current is None:
                    raise NotFound("movie", movie_id)
                updated = dataclasses.replace(
                    current,
                    title=clean.title if "title" in paths else current.title,
                    plot=clean.plot if "plot" in paths else current.plot,
                    genres=tuple(clean.genres) if "genres" in paths else current.genres,
                    cast_ids=tuple(clean.cast_ids) if "cast_ids" in paths else current.cast_ids,
                    price=clean.price if "price" in paths and clean.price else current.price,
                    update_time=now,
                )
                uow.movies.save(updated)
                changed = [
                    name
                    for name in ("title", "price")
                    if getattr(updated, name) != getattr(current, name)
                ]
                if changed:
                    uow.outbox.add(events.movie_changed(updated, changed), updated.update_time)
                uow.commit()
            return updated

        return handled_calls.once(call, self._uow, update, lambda: self._get(movie_id))

    def _get(self, movie_id: str) -> Movie:
        with self._uow(read_only=True) as uow:
            movie = uow.movies.get(movie_id)
        if movie is None:
            raise NotFound("movie", movie_id)
        return movie

    def delete_movie(self, movie_id: str, context: RequestContext) -> None:
        """Delete a movie; a repeat of the call answers nothing, as the first one did."""
        require_id(movie_id, "id")
        call = handled_calls.call_of(context, "DeleteMovie", {"id": movie_id})

        def delete() -> None:
            with self._uow() as uow:
                now = self._clock()
                handled_calls.claim(uow, call, now)
                if not uow.movies.delete(movie_id):
                    raise NotFound("movie", movie_id)
                uow.outbox.add(events.movie_deleted(movie_id), now)
                uow.commit()

        handled_calls.once(call, self._uow, delete, lambda: None)

    def remove_cast(self, uow: MovieUnitOfWork, cast_id: str) -> None:
        """A deleted cast member leaves every movie that named it (event handler: runs in
        the handler's unit of work, which commits). Buried first, so a create or update
        that checked the cast service before the delete cannot name it after this scan
        (services/common/tombstones.py)."""
        now = self._clock()
        uow.tombstones.bury(CAST, cast_id, now)
        for movie in uow.movies.with_cast(cast_id):
            remaining = tuple(c for c in movie.cast_ids if c != cast_id)
            uow.movies.save(dataclasses.replace(movie, cast_ids=remaining, update_time=now))

    def batch_get_movies(self, movie_ids: Sequence[str]) -> list[Movie]:
        """The movies that exist among ``movie_ids``, in request order, each once."""
        check_batch_ids(movie_ids, BATCH_MAX)

        def fetch(ids: Sequence[str]) -> dict[str, Movie]:
            with self._uow(read_only=True) as uow:
                return {m.id: m for m in uow.movies.get_many(ids)}

        return in_request_order(movie_ids, fetch)
