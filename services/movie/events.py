"""The movie service's events: what it publishes (MovieChanged, MovieDeleted) and what it
handles (CastDeleted), translated between the domain and ``events.proto``.

* ``CastDeleted`` -> the cast id leaves every movie's ``cast_ids`` (and the movie's
  ``update_time`` moves on). Title and price do not change, so no MovieChanged follows.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import field_mask_pb2

from cinema.v1 import events_pb2, money_pb2
from services.common.events.bus import Consumer
from services.common.wire import timestamp
from services.movie.domain import Movie
from services.movie.repository import MovieUnitOfWork

CONSUMER = "movie"


def movie_changed(movie: Movie, changed: list[str]) -> events_pb2.MovieChanged:
    """``movie`` after a change of the fields in ``changed`` (``title``, ``price``)."""
    return events_pb2.MovieChanged(
        movie_id=movie.id,
        changed_fields=field_mask_pb2.FieldMask(paths=changed),
        title=movie.title,
        price=money_pb2.Money(
            currency_code=movie.price.currency_code, amount_minor=movie.price.amount_minor
        ),
        update_time=timestamp(movie.update_time),
    )


def movie_deleted(movie_id: str) -> events_pb2.MovieDeleted:
    return events_pb2.MovieDeleted(movie_id=movie_id)


def consumer(
    uow: Callable[[], MovieUnitOfWork], remove_cast: Callable[[MovieUnitOfWork, str], None]
) -> Consumer:
    """The movie service's durable consumer: ``remove_cast`` applies a CastDeleted."""

    def cast_deleted(unit: MovieUnitOfWork, event: events_pb2.CastDeleted) -> None:
        remove_cast(unit, event.cast_id)

    return Consumer(CONSUMER, uow, {events_pb2.CastDeleted: cast_deleted})
