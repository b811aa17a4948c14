"""Movies and the rules about them. No gRPC, no SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from services.common.errors import Violations
from services.common.ids import id_problem
from services.common.money import Money, check_money

TITLE_MAX = 200
PLOT_MAX = 5000
GENRES_MAX = 20
GENRE_MAX = 50
CAST_IDS_MAX = 100
BATCH_MAX = 1000
UPDATABLE_FIELDS = frozenset({"title", "plot", "genres", "cast_ids", "price"})


class MovieView(Enum):
    BASIC = "basic"
    FULL = "full"


@dataclass(frozen=True)
class CastMember:
    """A cast member as the cast service describes it (embedded in the FULL view)."""

    id: str
    name: str
    nationality: str | None
    create_time: dt.datetime
    update_time: dt.datetime


@dataclass(frozen=True)
class Movie:
    """A movie for sale."""

    id: str
    title: str
    plot: str
    genres: tuple[str, ...]
    cast_ids: tuple[str, ...]
    price: Money
    create_time: dt.datetime
    update_time: dt.datetime

    @classmethod
    def new(cls, movie_id: str, clean: MovieFields, now: dt.datetime) -> Movie:
        """A movie made from fields that passed :func:`check_fields` (price included)."""
        assert clean.price is not None
        return cls(
            id=movie_id,
            title=clean.title,
            plot=clean.plot,
            genres=tuple(clean.genres),
            cast_ids=tuple(clean.cast_ids),
            price=clean.price,
            create_time=now,
            update_time=now,
        )


@dataclass(frozen=True)
class MovieWithCast:
    movie: Movie
    cast_members: tuple[CastMember, ...] = ()


@dataclass(frozen=True)
class MovieFields:
    """The client-settable fields of a movie, as sent (before validation)."""

    title: str
    plot: str
    genres: Sequence[str]
    cast_ids: Sequence[str]
    price: Money | None


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def check_fields(
    fields: MovieFields,
    prefix: str,
    violations: Violations,
    only: frozenset[str] = UPDATABLE_FIELDS,
) -> MovieFields:
    """Validated, normalised fields (trimmed, duplicates dropped); problems go to
    ``violations``. ``only`` limits the checks to the fields being written."""
    title = fields.title.strip()
    if "title" in only:
        if not title:
            violations.add(f"{prefix}.title", "is required")
        elif len(title) > TITLE_MAX:
            violations.add(f"{prefix}.title", f"must be at most {TITLE_MAX} characters")
    plot = fields.plot.strip()
    if "plot" in only and len(plot) > PLOT_MAX:
        violations.add(f"{prefix}.plot", f"must be at most {PLOT_MAX} characters")
    genres = _unique([g.strip() for g in fields.genres])
    if "genres" in only:
        if len(genres) > GENRES_MAX:
            violations.add(f"{prefix}.genres", f"at most {GENRES_MAX} genres")
        for index, genre in enumerate(fields.genres):
            if not genre.strip() or len(genre.strip()) > GENRE_MAX:
                violations.add(f"{prefix}.genres[{index}]", f"must be 1 to {GENRE_MAX} characters")
    cast_ids = _unique([c.strip() for c in fields.cast_ids])
    if "cast_ids" in only:
        if len(cast_ids) > CAST_IDS_MAX:
            violations.add(f"{prefix}.cast_ids", f"at most {CAST_IDS_MAX} cast members")
        for index, cast_id in enumerate(fields.cast_ids):
            problem = id_problem(cast_id.strip())
            if problem is not None:
                violations.add(f"{prefix}.cast_ids[{index}]", problem)
    price = fields.price
    if "price" in only:
        if price is None:
            violations.add(f"{prefix}.price", "is required")
        else:
            price = check_money(
                price.currency_code, price.amount_minor, f"{prefix}.price", violations
            )
    return MovieFields(title, plot, genres, cast_ids, price)


def unknown_cast_violations(
    requested: Sequence[str], known: set[str], prefix: str, violations: Violations
) -> None:
    """A violation for each requested cast id the cast service does not know."""
    for index, cast_id in enumerate(requested):
        if cast_id not in known:
            violations.add(f"{prefix}.cast_ids[{index}]", f"unknown cast id {cast_id!r}")
