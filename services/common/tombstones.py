"""What another service deleted, as this service's consumer learnt it: the ``tombstones``.

A write that names another service's resource asks that service first (CreateMovie asks
the cast service whether its cast members exist), before its own transaction. The owner's
delete event (CastDeleted) then makes the consumer remove the resource from every row that
names it. Between the two lies a race: if the event is applied after the peer answered
"exists" but before the write commits, the consumer's scan does not see the new row and
no later event will, so the row keeps a dangling id for good.

So the consumer buries the id (:meth:`Tombstones.bury`) in the transaction that applies
the event, and the write checks the ids it names (:meth:`Tombstones.buried`) inside its
own transaction, refusing a buried one as if the peer had said it does not exist. The two
are serialised: on PostgreSQL by one transaction-scoped advisory lock per database,
exclusive for a burial and shared for a check (taken before the check reads), so either
the burial commits first and the check sees it, or the write commits first and the
consumer's scan sees the write. Checks never wait for each other; a burial waits for the
checks in progress and they for it, for as long as the consumer's transaction lasts (a
batch of events). One lock rather than one per id: a consumer's batch buries several ids
in event order, and per-id locks taken in two orders could deadlock against a check. On
SQLite every write transaction holds the file's lock already (``BEGIN IMMEDIATE``).

Ids are never reused (services/common/ids.py), so a tombstone is kept; a service's
tombstones are as many as the deletes it heard of.

Each service's models call :func:`define`; the migration that adds the table calls
:func:`create_v1`, which is frozen like ``services/common/events/tables.py``'s.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

TABLE = "tombstones"
#: The advisory lock (PostgreSQL's two-key form) of burials and checks: no other lock of
#: Cinema's uses it.
_LOCK_KEY = {"space": 0x7E57, "key": 1}


def _columns() -> list[Any]:
    return [
        sa.Column("kind", sa.String(16), primary_key=True),  # "cast", "user", "movie"
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("delete_time", sa.DateTime(timezone=True), nullable=False),
    ]


def define(metadata: sa.MetaData) -> sa.Table:
    """The table on ``metadata`` (a service's models)."""
    return sa.Table(TABLE, metadata, *_columns())


def create_v1(op: Any) -> None:
    """Create the table (an Alembic migration's ``upgrade``). Frozen."""
    op.create_table(TABLE, *_columns())


def drop_v1(op: Any) -> None:
    """Drop what :func:`create_v1` made (a migration's ``downgrade``). Frozen."""
    op.drop_table(TABLE)


_table = define(sa.MetaData())
_BURY = {
    "postgresql": postgresql.insert(_table).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_table).on_conflict_do_nothing(),
}
_BURIED = sa.select(_table.c.kind, _table.c.id).where(
    sa.tuple_(_table.c.kind, _table.c.id).in_(sa.bindparam("pairs", expanding=True))
)


_LOCK_THEN_READ = (
    "SELECT pg_advisory_xact_lock_shared(:space, :key); SELECT kind, id FROM tombstones WHERE "
)


@functools.cache
def _check_postgresql(kinds: int) -> sa.TextClause:
    """PostgreSQL's check of ``kinds`` kinds of ids: one round trip, two statements in one
    query string. The first takes the shared lock; the second reads the tombstones with a
    snapshot of its own, taken after the first's wait (READ COMMITTED: a snapshot per
    statement), by the primary key (``id = ANY``: an index scan, where a join with the
    ids' array scanned the whole table)."""
    # Only placeholders are put together here (one pair per kind); every value is bound.
    read = " OR ".join(f"(kind = :kind_{n} AND id = ANY(:ids_{n}))" for n in range(kinds))
    return sa.text(_LOCK_THEN_READ + read)


_LOCK = sa.text("SELECT pg_advisory_xact_lock(:space, :key)")


class TombstoneStore(Protocol):
    """What a use case sees of the tombstones (:class:`Tombstones` implements it)."""

    def bury(self, kind: str, resource_id: str, now: dt.datetime) -> None: ...
    def buried(self, wanted: Mapping[str, Collection[str]]) -> set[tuple[str, str]]: ...


class Tombstones:
    """The ``tombstones`` rows, on one unit of work's connection (in its transaction)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._postgresql = connection.dialect.name == "postgresql"

    def bury(self, kind: str, resource_id: str, now: dt.datetime) -> None:
        """Record that ``resource_id`` of ``kind`` is gone, before the rows that name it
        are changed: a write checking it waits until this transaction ends."""
        if self._postgresql:
            self._connection.execute(_LOCK, _LOCK_KEY)  # re-entrant: a batch takes it again
        self._connection.execute(
            _BURY[self._connection.dialect.name],
            {"kind": kind, "id": resource_id, "delete_time": now},
        )

    def buried(self, wanted: Mapping[str, Collection[str]]) -> set[tuple[str, str]]:
        """Which of the ids in ``wanted`` (kind -> ids) are buried, as ``(kind, id)``; a
        burial in progress is waited for. Call it in the transaction that writes the rows
        naming them, before it commits. One round trip; none for no ids."""
        pairs = sorted({(kind, i) for kind, ids in wanted.items() for i in ids})
        if not pairs:
            return set()
        if self._postgresql:
            kinds = sorted({kind for kind, _ in pairs})
            params: dict[str, object] = dict(_LOCK_KEY)
            for n, kind in enumerate(kinds):
                params[f"kind_{n}"] = kind
                params[f"ids_{n}"] = [i for k, i in pairs if k == kind]
            rows = self._connection.execute(_check_postgresql(len(kinds)), params)
        else:
            rows = self._connection.execute(_BURIED, {"pairs": pairs})
        return {(row.kind, row.id) for row in rows}
