"""The ``outbox`` and ``inbox`` tables, the same in every service's database.

``outbox``: one row per event, written in the transaction of the change it reports.
``publish_time`` is NULL until the relay has JetStream's ack for it; ``lease_owner`` and
``lease_until`` say which relay (one per process) is publishing it right now, so the
replicas of a service never publish the same row at the same time (a lease rather than a
row lock held across the publish: no transaction stays open while the broker is slow or
away, and SQLite, whose write lock is the whole file, behaves like PostgreSQL). A relay
that dies mid-publish leaves its lease to run out; another one publishes the row again and
JetStream drops the copy by its ``Nats-Msg-Id`` (the event id).

``inbox``: one row per event a consumer applied, written in the transaction of the effect,
so a redelivered event finds its row and changes nothing.

Each service's models call :func:`define` on its own metadata; each service's migration
that adds them calls :func:`create_v1`. A later change to these tables is a new migration
step (``create_v2``...), and ``create_v1`` must then keep building the version-1 tables:
give it its own copy of the columns before changing :func:`define`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

OUTBOX = "outbox"
INBOX = "inbox"
_UNSENT = sa.text("publish_time IS NULL")


@dataclass(frozen=True)
class EventTables:
    """A service's ``outbox`` and ``inbox`` tables."""

    outbox: sa.Table
    inbox: sa.Table


def _outbox_columns() -> list[Any]:
    return [
        sa.Column("id", sa.String(64), primary_key=True),  # the event id
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("trace_context", sa.String(200), nullable=True),  # W3C traceparent
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("publish_time", sa.DateTime(timezone=True), nullable=True),
    ]


def _inbox_columns() -> list[Any]:
    return [
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("handle_time", sa.DateTime(timezone=True), nullable=False),
    ]


def _unsent_index(table: str) -> tuple[str, str, list[str], dict[str, Any]]:
    # Only unsent rows are indexed: the relay's scan stays small however many sent rows
    # wait for their purge. Both databases have partial indexes.
    return (
        f"ix_{table}_unsent",
        table,
        ["create_time"],
        {"postgresql_where": _UNSENT, "sqlite_where": _UNSENT},
    )


def define(metadata: sa.MetaData) -> EventTables:
    """The two tables on ``metadata`` (a service's models)."""
    outbox = sa.Table(OUTBOX, metadata, *_outbox_columns())
    name, _, columns, where = _unsent_index(OUTBOX)
    sa.Index(name, *(outbox.c[c] for c in columns), **where)
    sa.Index("ix_outbox_publish_time", outbox.c.publish_time)  # the purge of sent rows
    inbox = sa.Table(INBOX, metadata, *_inbox_columns())
    sa.Index("ix_inbox_handle_time", inbox.c.handle_time)
    return EventTables(outbox=outbox, inbox=inbox)


def create_v1(op: Any) -> None:
    """Create both tables and their indexes (an Alembic migration's ``upgrade``). Frozen."""
    op.create_table(OUTBOX, *_outbox_columns())
    name, table, columns, where = _unsent_index(OUTBOX)
    op.create_index(name, table, columns, **where)
    op.create_index("ix_outbox_publish_time", OUTBOX, ["publish_time"])
    op.create_table(INBOX, *_inbox_columns())
    op.create_index("ix_inbox_handle_time", INBOX, ["handle_time"])


def drop_v1(op: Any) -> None:
    """Drop what :func:`create_v1` made (a migration's ``downgrade``). Frozen."""
    op.drop_table(INBOX)
    op.drop_table(OUTBOX)
