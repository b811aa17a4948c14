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
are serialised per id: on PostgreSQL by a transaction-scoped advisory lock (exclusive for
the burial, shared for the check, taken before the check reads), so either the burial
commits first and the check sees it, or the write commits first and the consumer's scan
sees the write. On SQLite every write transaction holds the file's lock already
(``BEGIN IMMEDIATE``).

Ids are never reused (services/common/ids.py), so a tombstone is kept; a service's
tombstones are as many as the deletes it heard of.

Each service's models call :func:`define`; the migration that adds the table calls
:func:`create_v1`, which is frozen like ``services/common/events/tables.py``'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

TABLE = "tombstones"
#: The first key of the advisory locks (PostgreSQL's two-key form): no other lock of
#: Cinema's uses it.
_LOCK_SPACE = 0x7E57


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
_BURIED = sa.select(_table.c.id).where(
    _table.c.kind == sa.bindparam("kind"), _table.c.id.in_(sa.bindparam("ids", expanding=True))
)
_LOCK = {
    True: sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"),
    False: sa.text("SELECT pg_advisory_xact_lock_shared(:space, hashtext(:key))"),
}


class TombstoneStore(Protocol):
    """What a use case sees of the tombstones (:class:`Tombstones` implements it)."""

    def bury(self, kind: str, resource_id: str, now: dt.datetime) -> None: ...
    def buried(self, kind: str, ids: Collection[str]) -> set[str]: ...


class Tombstones:
    """The ``tombstones`` rows, on one unit of work's connection (in its transaction)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._postgresql = connection.dialect.name == "postgresql"

    def _lock(self, kind: str, ids: Collection[str], *, exclusive: bool) -> None:
        if self._postgresql:
            for resource_id in sorted(set(ids)):  # one order everywhere: no deadlock
                self._connection.execute(
                    _LOCK[exclusive], {"space": _LOCK_SPACE, "key": f"{kind}:{resource_id}"}
                )

    def bury(self, kind: str, resource_id: str, now: dt.datetime) -> None:
        """Record that ``resource_id`` of ``kind`` is gone, before the rows that name it
        are changed: a write checking it waits until this transaction ends."""
        self._lock(kind, [resource_id], exclusive=True)
        self._connection.execute(
            _BURY[self._connection.dialect.name],
            {"kind": kind, "id": resource_id, "delete_time": now},
        )

    def buried(self, kind: str, ids: Collection[str]) -> set[str]:
        """Which of ``ids`` are buried; a burial in progress is waited for. Call it in
        the transaction that writes the rows naming ``ids``, before it commits."""
        if not ids:
            return set()
        self._lock(kind, ids, exclusive=False)
        rows = self._connection.execute(_BURIED, {"kind": kind, "ids": sorted(set(ids))})
        return {row.id for row in rows}
