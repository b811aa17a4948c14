"""Engines, sessions and the unit of work: one use case, one transaction.

PostgreSQL (psycopg2) in production; one SQLite file per service as the embedded default.
SQLite write transactions start with ``BEGIN IMMEDIATE`` so that replicas sharing a file
queue on the busy timeout instead of failing when a reader upgrades to a writer.
"""

from __future__ import annotations

import logging
import pathlib
import sqlite3
import time
from types import TracebackType
from typing import Any, Protocol, Self

import sqlalchemy
from sqlalchemy import Connection, Engine, event, exc, text
from sqlalchemy.engine import make_url

from services.common import tracing
from services.common.errors import Unavailable
from services.common.events.store import EventLog, EventWriter, Inbox, Outbox, ReceiptWriter
from services.common.handled_calls import HandledCalls

logger = logging.getLogger(__name__)

_READ_ONLY = "cinema_read_only"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 4, autocommit: bool = False) -> Engine:
    """An engine for ``url`` with the pool and pragmas Cinema relies on.

    * ``hide_parameters``: a logged database error must never carry bound values (password
      hashes, payment token hashes) into the logs.
    * No overflow: the pool holds one connection per worker thread (settings make sure of
      it), and overflow connections are closed when returned, which made PostgreSQL open
      10 to 30 connections a second under load (docs/benchmarks.md).
    * No pre-ping on PostgreSQL: a ``SELECT 1`` per checkout cost a round trip per call. A
      connection that went stale (database restarted) fails its call with UNAVAILABLE
      (which Envoy retries for reads) and the pool is invalidated.
    * ``autocommit`` (PostgreSQL): every connection of the pool is in autocommit for good,
      and is not rolled back when returned. That is the pool for single-statement reads;
      switching a pooled connection to autocommit and back per call cost two
      ``set_isolation_level`` calls, a third of GetMovie's database time.
    """
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            pathlib.Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=0,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
    else:
        # autocommit: the pool's connections stay in autocommit, never reset on return.
        autocommit_pool = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
        engine = sqlalchemy.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_recycle=1800,
            hide_parameters=True,
            **(autocommit_pool if autocommit else {}),
        )
    tracing.trace_statements(engine)  # a span per statement of a traced call
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_SQLITE_BUSY_TIMEOUT_MS = 30_000


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent: only a new file needs it).

    Two replicas opening a new file at once race to switch it, and SQLite answers the
    loser "database is locked" at once instead of waiting on the busy timeout, so the
    switch is retried until that timeout.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ping(engine: Engine) -> bool:
    """Whether the database answers ``SELECT 1`` right now."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except exc.SQLAlchemyError as error:
        logger.warning("database does not answer: %s", error.__class__.__name__)
        return False


class EnginePools:
    """The connections a service's units of work use: ``engine`` for writes (one
    transaction each), ``single_statement_read`` for reads that need no transaction
    (a single statement, or statements consistent on their own: see
    ``services/order/repository.py``). Reads never take SQLite's write lock.

    On PostgreSQL, those reads have a pool of their own, in autocommit: no BEGIN/ROLLBACK
    round trips and no isolation switch per call. :meth:`close` disposes of both pools.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        read_engine = engine.execution_options(**{_READ_ONLY: True})
        self._autocommit: Engine | None = None
        if engine.dialect.name == "postgresql":
            self._autocommit = make_engine(
                engine.url.render_as_string(hide_password=False),
                pool_size=engine.pool.size(),  # type: ignore[attr-defined]
                autocommit=True,
            )
        self.single_statement_read = (
            self._autocommit.execution_options(**{_READ_ONLY: True})
            if self._autocommit is not None
            else read_engine
        )
        from services.common import metrics  # it pulls in grpc; db alone does not

        metrics.watch_pool("transactions", engine)
        if self._autocommit is not None:
            metrics.watch_pool("reads", self._autocommit)
        #: Where units of work report their wait for a connection, by the pool they use.
        self.write_wait = metrics.POOL_WAIT.labels("transactions")
        self.read_wait = (
            metrics.POOL_WAIT.labels("reads") if self._autocommit is not None else self.write_wait
        )

    def close(self) -> None:
        """Close every pooled connection."""
        if self._autocommit is not None:
            self._autocommit.dispose()
        self.engine.dispose()


class UnitOfWork(Protocol):
    """What a use case sees of a transaction: enter, commit, leave (rolling back what was
    not committed), the events it stores (``outbox``) or applies (``inbox``), and the
    calls it carried out (``calls``: :mod:`services.common.handled_calls`). Each service's
    protocol adds its repository."""

    @property
    def calls(self) -> HandledCalls: ...
    @property
    def outbox(self) -> EventWriter: ...
    @property
    def inbox(self) -> ReceiptWriter: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...


class CoreUnitOfWork:
    """One use case's database work for repositories written with Core statements only.

    Writes run in a transaction on one connection (``BEGIN IMMEDIATE`` on SQLite); a
    read-only use case, a single statement or statements consistent on their own, runs on
    a plain connection in autocommit on PostgreSQL: no BEGIN/ROLLBACK round trips. (At
    PostgreSQL's default isolation each statement takes its own snapshot even inside a
    transaction; a read that needs one snapshot across statements needs REPEATABLE READ.)
    Subclasses build their repositories in :meth:`_bind`. Connectivity errors surface as
    :class:`Unavailable`.

    ``outbox`` and ``inbox`` write events and event receipts in the same transaction
    (:mod:`services.common.events`); a commit that stored events wakes the relay.
    """

    connection: Connection
    outbox: Outbox
    inbox: Inbox

    def __init__(
        self, pools: EnginePools, *, read_only: bool = False, events: EventLog | None = None
    ) -> None:
        self._engine = pools.single_statement_read if read_only else pools.engine
        self._read_only = read_only
        self._wait = pools.read_wait if read_only else pools.write_wait
        self._events = events

    @property
    def calls(self) -> HandledCalls:
        """The calls this service carried out (built on first use: a read never pays for it)."""
        return HandledCalls(self.connection)

    def _bind(self, connection: Connection) -> None:  # pragma: no cover - overridden
        """Create the repositories on ``connection``."""

    def __enter__(self) -> Self:
        started = time.perf_counter()
        try:
            self.connection = self._engine.connect()
        except exc.OperationalError as error:
            # No connection could be made: the server is down, restarting or out of reach.
            # Found by restarting PostgreSQL under load (tests/e2e/test_database_restart.py):
            # this surfaced as INTERNAL, outside __exit__'s mapping.
            raise Unavailable("the database is unavailable") from error
        self._wait.observe(time.perf_counter() - started)
        if not self._read_only:
            self.connection.begin()
            self.outbox = Outbox(self.connection, self._events)
            self.inbox = Inbox(self.connection, self._events)
        self._bind(self.connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self.connection.in_transaction():
                self.connection.rollback()
        finally:
            self.connection.close()
        raise_if_unavailable(exc_value)

    def commit(self) -> None:
        self.connection.commit()
        if self.outbox.added and self._events is not None:
            self.outbox.added = 0
            self._events.committed()


def raise_if_unavailable(error: BaseException | None) -> None:
    """Raise :class:`Unavailable` when ``error`` says the database cannot be reached."""
    if isinstance(error, exc.OperationalError | exc.InterfaceError) and (
        error.connection_invalidated or _is_connectivity(error)
    ):
        raise Unavailable("the database is unavailable") from error


def _is_connectivity(error: exc.DBAPIError) -> bool:
    message = str(error.orig).lower()
    return any(
        marker in message
        for marker in (
            "could not connect",
            "connection refused",
            "server closed",
            "terminating",
            # A server shutting down or starting up ("the database system is ...").
            "shutting down",
            "starting up",
        )
    )
