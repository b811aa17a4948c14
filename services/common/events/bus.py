"""The events runtime of one service process: relay and consumer, on a thread of their own.

The services serve calls on grpcio's synchronous worker threads; nats-py is asyncio. So
each process runs one more thread with its own event loop for everything that talks to
NATS, and one database thread (its own pool connection) for what that loop asks of the
database. The RPC path never waits for the broker: a use case only writes its outbox row.

**Relay.** Woken by every commit that stored events (and at each poll, for rows another
replica left behind), it leases unsent rows (:class:`~services.common.events.store.
RelayStore`), publishes each to JetStream with ``Nats-Msg-Id`` set to the event id, and
marks the acked ones published. While the broker is away it publishes nothing and the
rows wait; the outbox lag metric shows it.

**Consumer.** A durable pull consumer named after the service, shared by its replicas, so
each event is handled by one replica at a time. An event is applied in one transaction
whose first write is its inbox receipt; the message is acked after the commit. A
redelivery (the replica died before acking, or the ack was lost) finds the receipt and
changes nothing. A handler that fails is retried with a growing delay: forever when the
database or a peer is unavailable (the event is not at fault), ``max_deliveries`` times
for any other error; then, like an event that cannot be decoded at all, it goes to the
dead-letter subject with the reason, and the consumer goes on with the next.

Streams and the consumer are created (or updated to this code's settings) on every
connect, so a fresh broker needs no setup.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import DecodeError, Message

from cinema.v1 import events_pb2
from services.common import metrics, tracing
from services.common.clock import Clock, as_utc, utc_now
from services.common.errors import Unavailable
from services.common.events import subjects
from services.common.events.store import EventLog, OutboxRow, RelayStore
from services.common.revocations import Revocations

if TYPE_CHECKING:
    from services.common.db import EnginePools, UnitOfWork
    from services.common.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a starting process waits for the revocations before it serves anyway.
REVOCATIONS_WAIT_SECONDS = 10.0
#: Header naming why an event went to the dead-letter subject.
DEAD_LETTER_REASON = "Cinema-Dead-Letter-Reason"
_CONTENT_TYPE = "application/protobuf"


Handler = Callable[[Any, Any], None]


@dataclasses.dataclass(frozen=True)
class Consumer:
    """What a service handles: the name of its durable consumer (shared by its replicas),
    its units of work, and one handler per event type. A handler gets the open unit of
    work and the event, and must not commit: the runtime commits the effect together with
    the event's inbox receipt."""

    name: str
    uow: Callable[[], UnitOfWork]
    handlers: Mapping[type[Message], Handler]

    def subjects(self) -> list[str]:
        return sorted(subjects.subject_of(event_type) for event_type in self.handlers)


@dataclasses.dataclass(frozen=True)
class BusSettings:
    """How the runtime talks to NATS."""

    url: str
    #: A delivered event not acked within this time is delivered again (to any replica).
    ack_wait_seconds: float = 10.0
    #: Deliveries of an event whose handler fails before it goes to the dead letters.
    max_deliveries: int = 5
    #: How often the relay looks for rows it was not woken for.
    poll_seconds: float = 1.0
    #: How long a relay's claim on rows lasts; another relay takes them over after it.
    lease_seconds: float = 30.0
    publish_timeout_seconds: float = 2.0
    #: Replicas of the streams (JetStream's ``num_replicas``): 1 on one server.
    stream_replicas: int = 1
    relay_batch: int = 100
    fetch_batch: int = 32


class _ReceiptTaken(Exception):
    """Another replica recorded an event of the batch meanwhile: go one by one."""


def retry_delay(deliveries: int) -> float:
    """Seconds before delivery number ``deliveries + 1``: 0.5, 1, 2, 4, ... at most 15."""
    return float(min(0.5 * 2 ** max(deliveries - 1, 0), 15.0))


class EventBus:
    """The relay and (when the service handles events) the consumer of one process."""

    def __init__(
        self,
        service: str,
        settings: BusSettings,
        log: EventLog,
        relay: RelayStore,
        consumer: Consumer | None = None,
        *,
        revocations: Revocations | None = None,
        revocation_window_seconds: float = 0.0,
        clock: Clock = utc_now,
    ) -> None:
        self.service = service
        self.settings = settings
        self._log = log
        self._relay = relay
        self._consumer = consumer
        self._clock = clock
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._database = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="events-db"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._nc: Any = None
        self._js: Any = None
        self._connected = False
        self._ready = False  # streams and consumer exist on the connected server
        #: JetStream's count of events the consumer has not acked (None: not known).
        self.consumer_pending: int | None = None
        self._revocations = revocations
        #: Sessions ended, filled from SessionRevoked events (None: not followed).
        self.revocations = revocations
        self._revocation_window = revocation_window_seconds
        self._begun = time.monotonic()
        self._backlog_due = 0.0
        self._ready_warned = False

    # -- called from other threads ------------------------------------------------------

    def start(self) -> None:
        """Start the thread; it connects (and keeps reconnecting) by itself."""
        self._log.on_commit(self.wake)
        self._thread.start()
        self._started.wait(5)

    def wake(self) -> None:
        """Tell the relay that a commit stored events (thread-safe, never blocks)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._wake.set)

    @property
    def connected(self) -> bool:
        return self._connected

    def ready(self) -> bool:
        """Whether the process may serve: the revocations that existed at start are read
        (so no ended session's token gets in), or the broker did not answer within
        :data:`REVOCATIONS_WAIT_SECONDS` (then it serves, says so, and reads them as soon
        as the broker is back: tokens live minutes, an outage of the shop would not)."""
        if self._revocations is None or self._revocations.loaded.is_set():
            return True
        if time.monotonic() - self._begun < REVOCATIONS_WAIT_SECONDS:
            return False
        if not self._ready_warned:
            self._ready_warned = True
            logger.warning(
                "events: revocations not loaded after %.0fs (NATS at %s unreachable); "
                "serving anyway, tokens of sessions ended meanwhile pass until they expire",
                REVOCATIONS_WAIT_SECONDS,
                self.settings.url,
            )
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Publish what is claimed, finish the event in hand, close the connection."""
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("events runtime did not stop within %.1fs", timeout)
        self._database.shutdown(wait=True, cancel_futures=True)

    # -- the event loop ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._started.set()
        metrics.BROKER_CONNECTED.set(0)
        try:
            if not await self._connect():
                return
            tasks = [asyncio.create_task(self._relay_loop(), name="relay")]
            if self._consumer is not None:
                tasks.append(asyncio.create_task(self._consume_loop(), name="consumer"))
            tasks.append(asyncio.create_task(self._housekeeping_loop(), name="housekeeping"))
            if self._revocations is not None:
                tasks.append(asyncio.create_task(self._follow_revocations(), name="revocations"))
            await self._stopping.wait()
            self._wake.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if self._nc is not None:
                try:
                    await asyncio.wait_for(self._nc.close(), 2)
                except Exception:  # closing a connection that may be gone
                    logger.debug("closing the NATS connection failed", exc_info=True)
            metrics.BROKER_CONNECTED.set(0)

    async def _connect(self) -> bool:
        """Connect, retrying until it works or the process stops; whether it did."""
        import nats

        delay = 0.2
        warned = False
        while not self._stopping.is_set():
            try:
                self._nc = await nats.connect(
                    self.settings.url,
                    name=f"cinema-{self.service}",
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                )
            except Exception as error:  # any failure means "try again"
                if not warned:
                    logger.warning(
                        "events: cannot reach NATS at %s (%s); retrying, events wait in the outbox",
                        self.settings.url,
                        error.__class__.__name__,
                    )
                    warned = True
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._js = self._nc.jetstream(timeout=self.settings.publish_timeout_seconds)
            self._set_connected(True)
            logger.info("events: connected to NATS at %s", self.settings.url)
            return True
        return False

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if not connected:
            self._ready = False
        metrics.BROKER_CONNECTED.set(1 if connected else 0)

    async def _on_disconnected(self) -> None:
        if self._connected:
            logger.warning("events: lost the connection to NATS; reconnecting")
        self._set_connected(False)

    async def _on_reconnected(self) -> None:
        logger.info("events: reconnected to NATS")
        self._set_connected(True)
        self._wake.set()

    async def _on_error(self, error: Exception) -> None:
        logger.debug("events: NATS client error: %s", error)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or return early when the process stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _db(self, work: Callable[..., T], *args: Any) -> T:
        """Run database work on the database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._database, work, *args)

    async def _ensure_ready(self) -> bool:
        """Create or update the streams and this service's consumer; whether they exist."""
        if self._ready:
            return True
        if not self._connected:
            return False
        from nats.js import api

        try:
            await self._ensure_stream(
                api.StreamConfig(
                    name=subjects.STREAM,
                    subjects=list(subjects.STREAM_SUBJECTS),
                    storage=api.StorageType.FILE,
                    retention=api.RetentionPolicy.LIMITS,
                    max_age=subjects.STREAM_MAX_AGE_SECONDS,
                    duplicate_window=subjects.DUPLICATE_WINDOW_SECONDS,
                    num_replicas=self.settings.stream_replicas,
                )
            )
            await self._ensure_stream(
                api.StreamConfig(
                    name=subjects.DEAD_LETTER_STREAM,
                    subjects=[f"{subjects.DEAD_LETTER_PREFIX}.>"],
                    storage=api.StorageType.FILE,
                    retention=api.RetentionPolicy.LIMITS,
                    max_age=subjects.DEAD_LETTER_MAX_AGE_SECONDS,
                    duplicate_window=subjects.DUPLICATE_WINDOW_SECONDS,
                    num_replicas=self.settings.stream_replicas,
                )
            )
            if self._consumer is not None:
                await self._js.add_consumer(
                    subjects.STREAM,
                    api.ConsumerConfig(
                        durable_name=self._consumer.name,
                        filter_subjects=self._consumer.subjects(),
                        ack_policy=api.AckPolicy.EXPLICIT,
                        deliver_policy=api.DeliverPolicy.ALL,
                        ack_wait=self.settings.ack_wait_seconds,
                        max_deliver=-1,  # the runtime dead-letters by itself
                        max_ack_pending=1000,
                    ),
                )
        except Exception as error:  # the broker is not ready: try later
            logger.warning("events: cannot set up JetStream yet: %s", error)
            return False
        self._ready = True
        return True

    async def _ensure_stream(self, config: Any) -> None:
        from nats.js.errors import NotFoundError

        try:
            await self._js.stream_info(config.name)
        except NotFoundError:
            await self._js.add_stream(config)
        else:
            await self._js.update_stream(config)

    # -- relay ---------------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        woken = False  # at start: look for rows left from before
        while not self._stopping.is_set():
            try:
                await self._relay_once(woken=woken)
            except Exception:
                logger.exception("events: the relay failed; retrying")
                await self._sleep(1.0)
            if self._stopping.is_set():
                break
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
                woken = True
            except TimeoutError:
                woken = False
            self._wake.clear()
        await self._relay_once(woken=False)  # what the last calls stored before the stop

    async def _relay_once(self, *, woken: bool) -> None:
        """Publish every unsent row this relay can lease, batch by batch.

        Woken by a commit, it claims at once (one statement); the backlog (a count for the
        metrics, and the check a poll makes for rows it was not told of) is read at most
        once per poll interval, not per batch.
        """
        loop_time = asyncio.get_running_loop().time()
        if not woken or loop_time >= self._backlog_due:
            self._backlog_due = loop_time + self.settings.poll_seconds
            try:
                backlog = await self._db(self._relay.backlog, self._clock())
            except Unavailable:
                return
            metrics.OUTBOX_UNSENT.set(backlog.unsent)
            metrics.OUTBOX_LAG.set(backlog.oldest_age_seconds)
            if not backlog.unsent:
                return
        if not await self._ensure_ready():
            return
        while self._connected:
            try:
                rows = await self._db(
                    self._relay.claim,
                    self.settings.relay_batch,
                    self.settings.lease_seconds,
                    self._clock(),
                )
            except Unavailable:
                return
            if not rows:
                break
            published = await self._publish(rows)
            unsent = [row.id for row in rows if row.id not in published]
            await self._db(self._relay.mark_published, list(published), self._clock())
            await self._db(self._relay.release, unsent)
            if unsent or len(rows) < self.settings.relay_batch:
                break

    async def _publish(self, rows: list[OutboxRow]) -> set[str]:
        """Publish ``rows`` in order, all in flight at once; the ids JetStream acked."""

        async def publish(row: OutboxRow) -> str | None:
            headers = {"Nats-Msg-Id": row.id, "Content-Type": _CONTENT_TYPE}
            if row.trace_context:
                headers["traceparent"] = row.trace_context
            try:
                await self._js.publish(
                    row.subject,
                    row.payload,
                    stream=subjects.STREAM,
                    headers=headers,
                    timeout=self.settings.publish_timeout_seconds,
                )
            except Exception as error:  # not acked: it stays unsent
                logger.warning("events: publishing %s %s failed: %s", row.subject, row.id, error)
                return None
            metrics.EVENTS_PUBLISHED.labels(row.subject).inc()
            return row.id

        results = await asyncio.gather(*(publish(row) for row in rows))
        return {row_id for row_id in results if row_id is not None}

    async def _housekeeping_loop(self) -> None:
        """Once a minute: drop rows no one needs any more; refresh the consumer's backlog."""
        while not self._stopping.is_set():
            now = self._clock()
            try:
                gone = await self._db(
                    self._relay.purge,
                    now - dt.timedelta(hours=1),
                    now - dt.timedelta(seconds=subjects.STREAM_MAX_AGE_SECONDS),
                )
                if gone:
                    logger.info("events: purged %d sent events and old receipts", gone)
            except Exception:  # housekeeping waits for the next round
                logger.warning("events: purge failed", exc_info=True)
            await self._sleep(60.0)

    # -- revocations ---------------------------------------------------------------------

    async def _follow_revocations(self) -> None:
        """Read every SessionRevoked from as far back as a live token reaches, then follow
        new ones, on an ordered consumer of this process's own (each replica needs all)."""
        from nats.js import api

        assert self._revocations is not None
        subject = subjects.subject_of(events_pb2.SessionRevoked)
        while not self._stopping.is_set():
            if not self._connected or not await self._ensure_ready():
                await self._sleep(0.5)
                continue
            start = self._clock() - dt.timedelta(seconds=self._revocation_window)
            try:
                subscription = await self._js.subscribe(
                    subject,
                    stream=subjects.STREAM,
                    ordered_consumer=True,
                    config=api.ConsumerConfig(
                        deliver_policy=api.DeliverPolicy.BY_START_TIME, opt_start_time=start
                    ),
                )
                backlog = int((await subscription.consumer_info()).num_pending or 0)
                read = 0
                while not self._stopping.is_set():
                    if read >= backlog and not self._revocations.loaded.is_set():
                        self._revocations.loaded.set()
                        logger.info("events: %d live revocations loaded", len(self._revocations))
                    try:
                        message = await subscription.next_msg(timeout=1.0)
                    except TimeoutError:
                        continue
                    read += 1
                    self._revoke(message.data)
            except Exception as error:
                logger.warning("events: following revocations failed: %s", error)
                await self._sleep(0.5)

    def _revoke(self, data: bytes) -> None:
        assert self._revocations is not None
        try:
            event = events_pb2.SessionRevoked.FromString(data)
        except DecodeError:
            logger.error("events: a SessionRevoked that cannot be decoded was ignored")
            return
        until = event.expire_time.ToDatetime(dt.UTC).timestamp()
        self._revocations.add(event.session_id, until)

    # -- consumer ------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        subscription: Any = None
        info_due = 0.0
        while not self._stopping.is_set():
            if not self._connected or not await self._ensure_ready():
                subscription = None
                await self._sleep(0.5)
                continue
            try:
                if subscription is None:
                    subscription = await self._js.pull_subscribe_bind(
                        consumer.name, stream=subjects.STREAM
                    )
                loop_time = asyncio.get_running_loop().time()
                if loop_time >= info_due:
                    info_due = loop_time + 5.0
                    info = await subscription.consumer_info()
                    self.consumer_pending = int(info.num_pending or 0) + int(
                        info.num_ack_pending or 0
                    )
                    metrics.CONSUMER_PENDING.labels(consumer.name).set(self.consumer_pending)
                messages = await subscription.fetch(self.settings.fetch_batch, timeout=1.0)
            except TimeoutError:
                continue  # nothing to handle (nats.errors.TimeoutError is one)
            except Exception as error:  # connection trouble: start over
                logger.warning("events: fetching from %s failed: %s", consumer.name, error)
                subscription = None
                self._ready = False
                await self._sleep(0.5)
                continue
            if len(messages) > 1:
                handled = await self._handle_batch(messages)
                messages = [m for m in messages if id(m) not in handled]
            for message in messages:
                try:
                    await self._handle(message)
                except Exception as error:  # an ack or nak that could not be sent
                    # Unacked, the event is delivered again after the ack wait; its inbox
                    # receipt makes that harmless if it was applied.
                    logger.warning(
                        "events: %s lost its connection mid-event: %s", consumer.name, error
                    )
                    subscription = None
                    self._ready = False
                    break

    async def _handle_batch(self, messages: list[Any]) -> set[int]:
        """Apply the decodable events of a fetched batch in ONE transaction (a receipt per
        event, one commit), then ack them; the ``id()`` of each message done so.

        Any trouble (a handler's error, a receipt another replica wrote meanwhile, the
        database away) rolls the batch back and leaves every message to the one-by-one
        path, which retries, dead-letters and logs each on its own. Measured by
        ``bench.events``: one commit per event was the consumer's limit.
        """
        assert self._consumer is not None
        batch: list[tuple[Any, Handler, Any, str | None]] = []
        for message in messages:
            decoded = self._decode(message)
            if not isinstance(decoded, str):  # the undecodable go one by one, to the dead letters
                handler, event = decoded
                headers = message.headers or {}
                batch.append((message, handler, event, headers.get("traceparent")))
        if len(batch) < 2:
            return set()
        try:
            outcomes = await self._db(self._apply_batch, batch)
        except Exception as error:
            logger.info("events: a batch of %d goes one by one: %s", len(batch), error)
            return set()
        done: set[int] = set()
        for (message, _handler, event, _traceparent), outcome in zip(batch, outcomes, strict=True):
            try:
                await message.ack()
            except Exception:  # unacked: redelivered after the ack wait, then a duplicate
                logger.warning("events: ack of %s failed", event.event_id)
            done.add(id(message))
            self._count(event, outcome)
        return done

    def _apply_batch(self, batch: list[tuple[Any, Handler, Any, str | None]]) -> list[str]:
        """The database side of :meth:`_handle_batch` (database thread)."""
        assert self._consumer is not None
        name = self._consumer.name
        outcomes: list[str] = []
        with self._consumer.uow() as uow:
            seen = uow.inbox.applied(name, [event.event_id for _m, _h, event, _t in batch])
            for _message, handler, event, traceparent in batch:
                if event.event_id in seen:
                    outcomes.append("duplicate")
                    continue
                if not uow.inbox.first_delivery(name, event.event_id, self._clock()):
                    raise _ReceiptTaken(event.event_id)
                seen.add(event.event_id)
                with self._span(event, traceparent, batch_size=len(batch)):
                    handler(uow, event)
                outcomes.append("applied")
            uow.commit()
        return outcomes

    async def _handle(self, message: Any) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        subject = message.subject
        decoded = self._decode(message)
        if isinstance(decoded, str):
            await self._dead_letter(message, decoded)
            return
        handler, event = decoded
        headers = message.headers or {}
        try:
            outcome = await self._db(self._apply, handler, event, headers.get("traceparent"))
        except Unavailable as error:
            # Not the event's fault: wait for the database or the peer, however long.
            deliveries = message.metadata.num_delivered
            logger.warning("events: %s %s waits: %s", subject, event.event_id, error)
            metrics.EVENTS_HANDLED.labels(consumer.name, subject, "retried").inc()
            await message.nak(delay=retry_delay(deliveries))
            return
        except Exception as error:
            deliveries = message.metadata.num_delivered
            reason = f"{error.__class__.__name__}: {error}"[:500]
            if deliveries >= self.settings.max_deliveries:
                logger.exception(
                    "events: %s %s failed %d times; dead-lettered",
                    subject,
                    event.event_id,
                    deliveries,
                )
                await self._dead_letter(message, f"failed {deliveries} times: {reason}")
                return
            logger.warning(
                "events: %s %s failed (delivery %d of %d): %s",
                subject,
                event.event_id,
                deliveries,
                self.settings.max_deliveries,
                reason,
            )
            metrics.EVENTS_HANDLED.labels(consumer.name, subject, "retried").inc()
            await message.nak(delay=retry_delay(deliveries))
            return
        await message.ack()
        self._count(event, outcome)

    def _decode(self, message: Any) -> tuple[Handler, Any] | str:
        """The handler and the event of ``message``, or why it cannot be handled."""
        assert self._consumer is not None
        subject = message.subject
        event_type = subjects.EVENT_TYPES.get(subject)
        handler = self._consumer.handlers.get(event_type) if event_type is not None else None
        if event_type is None or handler is None:
            return f"no handler for subject {subject}"
        try:
            event: Any = event_type.FromString(message.data)
        except DecodeError as error:
            return f"cannot decode {subject}: {error}"
        if not event.event_id:
            return f"{subject} has no event_id"
        return handler, event

    def _count(self, event: Any, outcome: str) -> None:
        """Metrics of one handled event: its outcome, and for an effect the lag to it."""
        assert self._consumer is not None
        name, subject = self._consumer.name, subjects.subject_of(event)
        metrics.EVENTS_HANDLED.labels(name, subject, outcome).inc()
        if outcome == "applied" and event.HasField("occur_time"):
            lag = (self._clock() - as_utc(event.occur_time.ToDatetime(dt.UTC))).total_seconds()
            metrics.EVENT_LAG.labels(name, subject).observe(max(lag, 0.0))

    def _span(
        self, event: Any, traceparent: str | None, *, batch_size: int = 1
    ) -> contextlib.AbstractContextManager[None]:
        """The CONSUMER span of one event's handling (continuing its change's trace)."""
        assert self._consumer is not None
        name, subject = self._consumer.name, subjects.subject_of(event)
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.message.id": event.event_id,
            "messaging.consumer.group.name": name,
        }
        if batch_size > 1:
            attributes["messaging.batch.message_count"] = str(batch_size)
        return tracing.consumer_span(f"{name} handle {subject}", traceparent, attributes)

    def _apply(self, handler: Handler, event: Any, traceparent: str | None) -> str:
        """Apply ``event`` with its inbox receipt in one transaction (database thread)."""
        assert self._consumer is not None
        name = self._consumer.name
        with self._span(event, traceparent), self._consumer.uow() as uow:
            if not uow.inbox.first_delivery(name, event.event_id, self._clock()):
                return "duplicate"
            handler(uow, event)
            uow.commit()
        return "applied"

    async def _dead_letter(self, message: Any, reason: str) -> None:
        """Park ``message`` on the dead-letter subject with ``reason``; stop its redelivery."""
        assert self._consumer is not None
        consumer = self._consumer.name
        headers = dict(message.headers or {})
        original_id = headers.get("Nats-Msg-Id", f"seq-{message.metadata.sequence.stream}")
        headers.update(
            {
                DEAD_LETTER_REASON: reason[:1000],
                "Cinema-Original-Subject": message.subject,
                "Nats-Msg-Id": f"{consumer}:{original_id}",
            }
        )
        logger.error(
            "events: %s dead-lettered %s (%s): %s", consumer, message.subject, original_id, reason
        )
        try:
            await self._js.publish(
                subjects.dead_letter_subject(consumer, message.subject),
                message.data,
                stream=subjects.DEAD_LETTER_STREAM,
                headers=headers,
                timeout=self.settings.publish_timeout_seconds,
            )
        except Exception as error:  # keep it: it is delivered again later
            logger.warning("events: cannot dead-letter %s yet: %s", original_id, error)
            await message.nak(delay=retry_delay(message.metadata.num_delivered))
            return
        await message.term()
        metrics.EVENTS_HANDLED.labels(consumer, message.subject, "dead_lettered").inc()


def build_runtime(
    settings: Settings,
    log: EventLog,
    pools: EnginePools,
    consumer: Consumer | None = None,
) -> EventBus | None:
    """The events runtime of a service process, or None when events are off. It also
    keeps the process's :attr:`EventBus.revocations` (every service checks them)."""
    if not log.enabled:
        return None
    owner = f"{settings.service}@{socket.gethostname()}:{os.getpid()}"[:64]
    relay = RelayStore(pools.engine, pools.single_statement_read, log.tables, owner)
    bus_settings = BusSettings(
        url=settings.nats_url, stream_replicas=settings.events_stream_replicas
    )
    return EventBus(
        settings.service,
        bus_settings,
        log,
        relay,
        consumer,
        revocations=Revocations(),
        # A token issued just before its session ended lives this long after.
        revocation_window_seconds=settings.access_token_ttl_seconds + 60,
    )
