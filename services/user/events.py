"""The user service's events: what it publishes (UserDeleted) and what it handles,
translated between the domain and ``events.proto``.

* ``OrderPaid`` -> the order's movies join the buyer's library (ListOwnedMovies), with
  their titles as ordered; an account deleted meanwhile gets nothing.
* ``MovieChanged`` -> a new title reaches every library that holds the movie (only a title
  newer than the one stored: events of one movie may arrive out of order). A new price
  changes nothing: what was paid is on the order.
* ``MovieDeleted`` is not handled: what was paid for stays in the library, under its last
  title.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from cinema.v1 import events_pb2
from services.common.events.bus import Consumer
from services.common.wire import timestamp
from services.user.domain import PaidMovie, Session
from services.user.repository import UserUnitOfWork

if TYPE_CHECKING:
    from services.user.service import UserService

CONSUMER = "user"


def user_deleted(user_id: str) -> events_pb2.UserDeleted:
    return events_pb2.UserDeleted(user_id=user_id)


def session_revoked(
    session: Session, until: dt.datetime, reason: events_pb2.SessionRevoked.Reason.ValueType
) -> events_pb2.SessionRevoked:
    """``session`` ended: its access tokens are refused everywhere until ``until``."""
    return events_pb2.SessionRevoked(
        session_id=session.id,
        user_id=session.user_id,
        expire_time=timestamp(until),
        reason=reason,
    )


def consumer(uow: Callable[[], UserUnitOfWork], service: UserService) -> Consumer:
    """The user service's durable consumer."""

    def order_paid(unit: UserUnitOfWork, event: events_pb2.OrderPaid) -> None:
        movies = [PaidMovie(item.movie_id, item.title) for item in event.items]
        service.add_purchase(
            unit,
            event.user_id,
            event.order_id,
            movies,
            paid=event.pay_time.ToDatetime(dt.UTC),
            titles_as_of=event.order_create_time.ToDatetime(dt.UTC),
        )

    def movie_changed(unit: UserUnitOfWork, event: events_pb2.MovieChanged) -> None:
        if "title" in event.changed_fields.paths:
            as_of = event.update_time.ToDatetime(dt.UTC)
            service.rename_owned_movie(unit, event.movie_id, event.title, as_of)

    return Consumer(
        CONSUMER,
        uow,
        {events_pb2.OrderPaid: order_paid, events_pb2.MovieChanged: movie_changed},
    )
