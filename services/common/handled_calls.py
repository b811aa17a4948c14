"""Calls a service carried out, so that Envoy may repeat an update, a delete or a cancel.

Envoy repeats a call whose replica died or failed before it answered (``REPEATABLE_WRITES``
in gateway/envoy_config.py). For an update or a delete the first try may have committed
all the same: a repeat would then answer NOT_FOUND (a delete), FAILED_PRECONDITION (a
cancel), or write its fields over a change someone made in between (an update). So such a
use case records the gateway's id of the call (``x-cinema-call-id``, the same on every try
of one client call) in the ``handled_calls`` table, in its own transaction, with the
method and a fingerprint of the request (who asks, and what):

* the transaction claims the call id before it changes anything (:func:`claim`). A
  try of a call that committed before finds its row and answers a replay instead of doing
  the work again (:func:`once`). On PostgreSQL a concurrent try of the same call waits on
  the first one's uncommitted row (``INSERT ... ON CONFLICT DO NOTHING``), then finds it
  and replays;
* a try that fails (NOT_FOUND, FAILED_PRECONDITION) after another try of the same call
  committed answers the replay too;
* the same call id with another fingerprint is ALREADY_EXISTS ``IDEMPOTENCY_KEY_REUSED``:
  never a replay of someone else's call.

A replay answers what the call answers now: nothing for a delete or a logout, the resource
as it is now for an update or a cancel. A call id is kept for :data:`KEEP` (Envoy repeats
within a call's deadline, seconds), and rows older than that are deleted by a claim at most
once per :data:`PURGE_EVERY` per process. A call without an id (made to a replica
directly, not through the gateway) is not recorded, and Envoy is the only one that repeats
calls.

A call that ends the caller's own session (Logout, RevokeSession or DeleteUser of oneself, a
change of one's own role) would find its repeat refused as UNAUTHENTICATED before the use
case could replay it. So the authorization interceptor lets a token whose session has
ended through for one thing only: a call id this service already carried out for that
method (:func:`handled_by`, ``ServiceSpec.handled_call``), which then answers its replay.

Each service's models call :func:`define`; the migration that adds the table calls
:func:`create_v1`. Like ``services/common/events/tables.py``, ``create_v1`` is frozen.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from services.common.context import CALL_ID_MAX, CALL_ID_METADATA, RequestContext
from services.common.errors import AlreadyExists, DomainError
from services.common.idempotency import REASON_KEY_REUSED, REQUEST_HASH_LENGTH, fingerprint

logger = logging.getLogger(__name__)

TABLE = "handled_calls"
#: How long a call id is remembered.
KEEP = dt.timedelta(hours=1)
#: How often (per process, at most) a claim also deletes the rows older than KEEP.
PURGE_EVERY = 600.0
METHOD_MAX = 64

T = TypeVar("T")

#: The RPCs whose calls are recorded: Envoy may repeat them (gateway/envoy_config.py), and
#: only these may be answered to a token whose session has ended.
RECORDED: frozenset[str] = frozenset(
    f"/cinema.v1.{service}/{method}"
    for service, method in (
        ("MovieService", "UpdateMovie"),
        ("MovieService", "DeleteMovie"),
        ("CastService", "UpdateCast"),
        ("CastService", "DeleteCast"),
        ("UserService", "UpdateUser"),
        ("UserService", "DeleteUser"),
        ("UserService", "Logout"),
        ("UserService", "RevokeSession"),
        ("OrderService", "CancelOrder"),
    )
)


@dataclass(frozen=True)
class Call:
    """One client call of a write, as the gateway names it: its id, the RPC, and a
    fingerprint of who asked for what."""

    id: str
    method: str
    request_hash: str


def call_of(context: RequestContext, method: str, request: Mapping[str, object]) -> Call | None:
    """The call ``context`` serves, when it has a gateway call id; None otherwise.

    ``request`` holds the request's validated fields (never a secret: the fingerprint is
    stored); the caller's subject is added, so no one gets a replay of someone else's call.
    """
    if not context.call_id or len(context.call_id) > CALL_ID_MAX:
        return None
    subject = context.principal.subject if context.principal is not None else ""
    return Call(context.call_id, method, fingerprint({"by": subject, **request}))


def _columns() -> list[Any]:
    return [
        sa.Column("call_id", sa.String(CALL_ID_MAX), nullable=False),
        sa.Column("method", sa.String(METHOD_MAX), nullable=False),
        sa.Column("request_hash", sa.String(REQUEST_HASH_LENGTH), nullable=False),
        sa.Column("handle_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name="pk_handled_calls"),
    ]


def define(metadata: sa.MetaData) -> sa.Table:
    """The table on ``metadata`` (a service's models)."""
    table = sa.Table(TABLE, metadata, *_columns())
    sa.Index("ix_handled_calls_handle_time", table.c.handle_time)  # the purge
    return table


def create_v1(op: Any) -> None:
    """Create the table and its index (an Alembic migration's ``upgrade``). Frozen."""
    op.create_table(TABLE, *_columns())
    op.create_index("ix_handled_calls_handle_time", TABLE, ["handle_time"])


def drop_v1(op: Any) -> None:
    """Drop what :func:`create_v1` made (a migration's ``downgrade``). Frozen."""
    op.drop_table(TABLE)


#: The table as statements use it; every service's database has it under this name.
_table = define(sa.MetaData())


class _Purge:
    """When this process last purged old call ids (monotonic clock)."""

    lock = threading.Lock()
    last = float("-inf")

    @classmethod
    def due(cls) -> bool:
        now = time.monotonic()
        with cls.lock:
            if now - cls.last < PURGE_EVERY:
                return False
            cls.last = now
            return True


class AlreadyHandled(Exception):
    """This call id is stored: the call committed before (raised by :meth:`HandledCalls.claim`)."""

    def __init__(self, stored: Call) -> None:
        super().__init__(stored.id)
        self.stored = stored


#: Built once: SQLAlchemy then finds their compiled forms by a cheap cache key.
_FIND = sa.select(_table.c.method, _table.c.request_hash).where(
    _table.c.call_id == sa.bindparam("call_id")
)
_PURGE = sa.delete(_table).where(_table.c.handle_time < sa.bindparam("before"))
#: One statement per claim: ``ON CONFLICT DO NOTHING`` inserts the row, or (the call id
#: is taken) inserts nothing and raises nothing. On PostgreSQL it waits for a concurrent
#: try's uncommitted row first, so the transaction is never spoilt by a duplicate.
_CLAIM = {
    "postgresql": postgresql.insert(_table).on_conflict_do_nothing(index_elements=["call_id"]),
    "sqlite": sqlite.insert(_table).on_conflict_do_nothing(index_elements=["call_id"]),
}


class HandledCalls:
    """The ``handled_calls`` rows, on one unit of work's connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def find(self, call_id: str) -> Call | None:
        row = self._connection.execute(_FIND, {"call_id": call_id}).first()
        return None if row is None else Call(call_id, row.method, row.request_hash)

    def claim(self, call: Call, now: dt.datetime) -> None:
        """Record ``call`` in this transaction; :class:`AlreadyHandled` when another try
        of it stored it first (committed: a try still in progress is waited for)."""
        inserted = self._connection.execute(
            _CLAIM[self._connection.dialect.name],
            {
                "call_id": call.id,
                "method": call.method,
                "request_hash": call.request_hash,
                "handle_time": now,
            },
        ).rowcount
        if not inserted:
            stored = self.find(call.id)
            if stored is None:  # only rows older than KEEP are ever deleted
                raise RuntimeError(f"call {call.id} is taken but not stored")
            raise AlreadyHandled(stored)
        if _Purge.due():
            self._connection.execute(_PURGE, {"before": now - KEEP})


class _CallsUnitOfWork(Protocol):
    @property
    def calls(self) -> HandledCalls: ...

    def __enter__(self) -> _CallsUnitOfWork: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


def claim(uow: _CallsUnitOfWork, call: Call | None, now: dt.datetime) -> None:
    """Record ``call`` in ``uow``'s transaction, first thing; nothing for a call without
    an id. Raises as :meth:`HandledCalls.claim`, which :func:`once` expects."""
    if call is not None:
        uow.calls.claim(call, now)


class CallIdReused(AlreadyExists):
    """The gateway's call id names a call that asked for something else."""

    reason = REASON_KEY_REUSED

    def __init__(self, call: Call) -> None:
        super().__init__(
            f"this call ({CALL_ID_METADATA} {call.id!r}) was already handled with other fields",
            metadata={"call_id": call.id},
        )


def once(
    call: Call | None,
    uow: Callable[..., _CallsUnitOfWork],
    work: Callable[[], T],
    replay: Callable[[], T],
) -> T:
    """``work()``, at most once per call (module docstring); ``replay()`` answers a repeat.

    ``work`` opens its own unit of work and calls :func:`claim` before it changes
    anything; ``uow(read_only=True)`` reads the stored call when a try fails.
    """
    if call is None:
        return work()
    try:
        return work()
    except AlreadyHandled as handled:
        stored: Call | None = handled.stored
    except DomainError:
        # Failed on its own, or because another try of this call did the work first
        # (NOT_FOUND for a delete)? Only the stored call tells.
        stored = _stored(uow, call.id)
        if stored is None:
            raise
    assert stored is not None
    if stored.request_hash != call.request_hash or stored.method != call.method:
        raise CallIdReused(call)
    logger.info("answered a repeat of %s (call %s)", call.method, call.id)
    return replay()


def handled_by(uow: Callable[..., _CallsUnitOfWork]) -> Callable[[str, str], bool]:
    """``handled(method, call_id)``: whether this service carried out the call ``call_id``
    of ``method`` (a name such as ``"Logout"``). For the authorization interceptor, which
    asks only about a token whose session has ended."""

    def handled(method: str, call_id: str) -> bool:
        stored = _stored(uow, call_id)
        return stored is not None and stored.method == method

    return handled


def _stored(uow: Callable[..., _CallsUnitOfWork], call_id: str) -> Call | None:
    """The call stored under ``call_id``, read in a unit of work of its own."""
    with uow(read_only=True) as reader:
        return reader.calls.find(call_id)
