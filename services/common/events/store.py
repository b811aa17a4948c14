"""What the database holds of events: outbox rows and inbox receipts.

A use case writes its events through ``uow.outbox`` (:class:`Outbox`) in its own
transaction; an event handler runs in a transaction whose first write is the event's inbox
receipt (:class:`Inbox`). The relay reads and marks outbox rows through
:class:`RelayStore`, in short transactions of its own that never span a publish.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, delete, exc, func, insert, or_, select, update

from services.common.clock import as_utc
from services.common.events.subjects import subject_of
from services.common.events.tables import EventTables
from services.common.ids import new_id
from services.common.wire import timestamp


class EventWriter(Protocol):
    """What a use case sees of the outbox."""

    def add(self, event: Any, occur_time: dt.datetime) -> None:
        """Store ``event`` to be published once the transaction commits."""
        ...


class ReceiptWriter(Protocol):
    """What an event handler's transaction sees of the inbox."""

    def first_delivery(self, consumer: str, event_id: str, now: dt.datetime) -> bool:
        """Record the event as applied in this transaction; False when it already was."""
        ...

    def applied(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` ``consumer`` has applied already."""
        ...


class EventLog:
    """A service's event tables, whether it writes events at all, and whom to tell when a
    transaction stored some (its relay, which then publishes at once instead of at its
    next poll).

    ``enabled=False`` (``CINEMA_EVENTS=off``) writes no outbox rows: for a service run on
    its own, and for the benchmark that measures what the outbox costs a write.
    """

    def __init__(self, tables: EventTables, *, enabled: bool = True) -> None:
        self.tables = tables
        self.enabled = enabled
        #: Built once: SQLAlchemy then finds its compiled form by a cheap cache key.
        self.insert = insert(tables.outbox)
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from the committing thread) after each commit that stored events."""
        with self._lock:
            self._listeners.append(listener)

    def committed(self) -> None:
        for listener in tuple(self._listeners):
            listener()


class Outbox:
    """The events of one unit of work, written in its transaction."""

    def __init__(self, connection: Connection, log: EventLog | None) -> None:
        self._connection = connection
        self._log = log
        self.added = 0

    def add(self, event: Any, occur_time: dt.datetime) -> None:
        """Store ``event`` (an ``events.proto`` message) to be published once the
        transaction commits. Fills its ``event_id`` (when empty) and ``occur_time``.

        The current trace context goes with it, so the consumer's span continues the
        trace of the call that made the change.
        """
        if self._log is None or not self._log.enabled:
            return
        from services.common import tracing

        if not event.event_id:
            event.event_id = new_id()
        event.occur_time.CopyFrom(timestamp(occur_time))
        self._connection.execute(
            self._log.insert,
            {
                "id": event.event_id,
                "subject": subject_of(event),
                "payload": event.SerializeToString(),
                "trace_context": tracing.current_traceparent(),
                "create_time": occur_time,
                "attempts": 0,
            },
        )
        self.added += 1


class Inbox:
    """Receipts of the events a consumer applied."""

    def __init__(self, connection: Connection, log: EventLog | None) -> None:
        self._connection = connection
        self._log = log

    def first_delivery(self, consumer: str, event_id: str, now: dt.datetime) -> bool:
        """Record that ``consumer`` applies ``event_id`` in this transaction; False when it
        already did (the transaction is then spoilt: end it without committing).

        On PostgreSQL a second transaction recording the same id waits for the first to
        end, then fails here; on SQLite writers take turns anyway.
        """
        if self._log is None:
            raise RuntimeError("this unit of work has no event tables")
        try:
            self._connection.execute(
                insert(self._log.tables.inbox),
                {"consumer": consumer, "event_id": event_id, "handle_time": now},
            )
        except exc.IntegrityError:
            return False
        return True

    def applied(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        if self._log is None:
            raise RuntimeError("this unit of work has no event tables")
        inbox = self._log.tables.inbox
        return set(
            self._connection.scalars(
                select(inbox.c.event_id).where(
                    inbox.c.consumer == consumer, inbox.c.event_id.in_(list(event_ids))
                )
            )
        )


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    """An event the relay is to publish."""

    id: str
    subject: str
    payload: bytes
    trace_context: str | None
    create_time: dt.datetime
    attempts: int


@dataclasses.dataclass(frozen=True)
class Backlog:
    """Unsent events: how many, and how long the oldest has waited."""

    unsent: int
    oldest_age_seconds: float


class RelayStore:
    """The relay's reads and writes of the outbox, each a short transaction of its own."""

    def __init__(
        self, engine: Engine, read_engine: Engine, tables: EventTables, owner: str
    ) -> None:
        self._engine = engine
        self._read_engine = read_engine  # the backlog check: never SQLite's write lock
        self._outbox = tables.outbox
        self._inbox = tables.inbox
        self.owner = owner
        self._postgresql = engine.dialect.name == "postgresql"

    def claim(self, limit: int, lease_seconds: float, now: dt.datetime) -> list[OutboxRow]:
        """Lease up to ``limit`` unsent rows nobody else holds a live lease on, oldest first.

        One statement, ``UPDATE ... WHERE id IN (SELECT ...) RETURNING``. PostgreSQL: the
        inner SELECT is ``FOR UPDATE SKIP LOCKED``, so relays claiming at the same moment
        take different rows instead of queueing. SQLite: its write lock serialises claims.
        """
        o = self._outbox
        free = or_(o.c.lease_until.is_(None), o.c.lease_until < now)
        candidates = (
            select(o.c.id)
            .where(o.c.publish_time.is_(None), free)
            .order_by(o.c.create_time, o.c.id)
            .limit(limit)
        )
        if self._postgresql:
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            update(o)
            .where(o.c.id.in_(candidates.scalar_subquery()))
            .values(
                lease_owner=self.owner,
                lease_until=now + dt.timedelta(seconds=lease_seconds),
                attempts=o.c.attempts + 1,
            )
            .returning(*self._row_columns())
        )
        with self._engine.begin() as connection:
            rows = [OutboxRow(*row) for row in connection.execute(statement)]
        rows.sort(key=lambda row: (as_utc(row.create_time), row.id))  # RETURNING has no order
        return [dataclasses.replace(r, create_time=as_utc(r.create_time)) for r in rows]

    def _row_columns(self) -> list[Any]:
        o = self._outbox
        return [o.c.id, o.c.subject, o.c.payload, o.c.trace_context, o.c.create_time, o.c.attempts]

    def mark_published(self, ids: Sequence[str], now: dt.datetime) -> None:
        """Record JetStream's ack of ``ids`` (only rows this relay still holds)."""
        if ids:
            self._finish(ids, publish_time=now)

    def release(self, ids: Sequence[str]) -> None:
        """Give back leases on rows that could not be published, for the next attempt."""
        if ids:
            self._finish(ids, publish_time=None)

    def _finish(self, ids: Sequence[str], publish_time: dt.datetime | None) -> None:
        o = self._outbox
        with self._engine.begin() as connection:
            connection.execute(
                update(o)
                .where(o.c.id.in_(bindparam("ids", expanding=True)), o.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None, publish_time=publish_time),
                {"ids": list(ids)},
            )

    def backlog(self, now: dt.datetime) -> Backlog:
        """How many rows are unsent and the age of the oldest (0 when none)."""
        o = self._outbox
        with self._read_engine.connect() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(o.c.create_time)).where(o.c.publish_time.is_(None))
            ).one()
        age = (now - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        return Backlog(int(count), max(age, 0.0))

    def purge(self, published_before: dt.datetime, handled_before: dt.datetime) -> int:
        """Delete sent rows published before ``published_before`` and inbox receipts
        older than ``handled_before`` (older than the stream keeps an event: no
        redelivery can need them). How many rows went."""
        with self._engine.begin() as connection:
            sent = connection.execute(
                delete(self._outbox).where(self._outbox.c.publish_time < published_before)
            ).rowcount
            receipts = connection.execute(
                delete(self._inbox).where(self._inbox.c.handle_time < handled_before)
            ).rowcount
        return int(sent or 0) + int(receipts or 0)
