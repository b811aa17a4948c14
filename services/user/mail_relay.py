"""The mail relay: hands the mail use cases queued (``mail_outbox``) to the mailer, after
their transaction committed, on a thread of its own.

Why an outbox and not a send inside the call: a registration used to hand its mail over
before its commit, so a slow SMTP server held the call (and, on SQLite, the database's
write lock) for as long as it took, a server that was away made every registration fail,
and a commit that failed after the mail left sent a link to nothing. Now the mail is a row
written in the use case's own transaction: it leaves if and only if the registration is
stored, and no call waits for the mail server.

* **Woken** by every commit that queued mail (:meth:`MailRelay.wake`), and every
  ``poll_seconds`` for rows another replica left behind or whose retry is due.
* **Leased**, not locked: a relay takes a due row in one short transaction (``UPDATE ...
  RETURNING``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas take different rows)
  by moving its ``due_time`` a lease ahead (twice the mailer's longest hand-over: 5 s for
  files, 2 minutes for SMTP), then talks to the mailer outside any transaction. A relay
  that dies mid-way leaves its row to whichever relay looks after the lease. So a mail is
  sent **at least once**: a crash between the hand-over and the delete sends it again, a
  second mail with the same link.
* **Retried** while the mailer is away or answers 4xx, after 1, 2, 4 ... at most 300 s;
  **dropped** when the server refuses it for good (5xx for the address or the mail) or
  when it is older than a registration's link lives (24 h: its link could open nothing).
  A dropped mail is logged by its id, never by its address.

``cinema_mail_unsent`` and ``cinema_mail_lag_seconds`` (the oldest unsent mail's age) are
read at each poll; ``cinema_mail_deliveries_total{outcome}`` counts ``sent``,
``deferred``, ``refused`` and ``expired``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable

import prometheus_client
from sqlalchemy import Engine, delete, func, select, update

from services.common import tracing
from services.common.clock import Clock, as_utc, utc_now
from services.user.domain import REGISTRATION_TTL
from services.user.mail import SMTP_TIMEOUT_SECONDS, Mail, Mailer, MailNotSent
from services.user.models import Base, MailOutboxRow

logger = logging.getLogger(__name__)

MAIL_UNSENT = prometheus_client.Gauge(
    "cinema_mail_unsent", "Mail in the user service's outbox that the mailer has not taken yet."
)
MAIL_LAG = prometheus_client.Gauge(
    "cinema_mail_lag_seconds", "Age of the oldest mail the mailer has not taken yet (0: none)."
)
MAIL_DELIVERIES = prometheus_client.Counter(
    "cinema_mail_deliveries",
    "Attempts to hand a mail to the mailer, by outcome: sent, deferred (tried again "
    "later), refused (for good by the server), expired (older than its link lives).",
    ["outcome"],
)

_outbox = Base.metadata.tables[MailOutboxRow.__tablename__]


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 1, 2, 4 ... 300."""
    return float(min(2 ** max(attempts - 1, 0), 300))


@dataclasses.dataclass(frozen=True)
class QueuedMail:
    """A mail the relay holds a lease on. ``attempts`` counts this one."""

    id: str
    mail: Mail
    trace_context: str | None
    create_time: dt.datetime
    attempts: int


class MailOutbox:
    """The relay's reads and writes of ``mail_outbox``, each a short transaction."""

    def __init__(self, engine: Engine, read_engine: Engine | None = None) -> None:
        self._engine = engine
        self._read_engine = read_engine or engine  # the backlog: never SQLite's write lock
        self._postgresql = engine.dialect.name == "postgresql"

    def claim(self, limit: int, lease_seconds: float, now: dt.datetime) -> list[QueuedMail]:
        """Lease up to ``limit`` due mails for ``lease_seconds``, oldest first (see the
        module's notes)."""
        o = _outbox
        due = select(o.c.id).where(o.c.due_time <= now).order_by(o.c.create_time).limit(limit)
        if self._postgresql:
            due = due.with_for_update(skip_locked=True)
        statement = (
            update(o)
            .where(o.c.id.in_(due.scalar_subquery()))
            .values(due_time=now + dt.timedelta(seconds=lease_seconds), attempts=o.c.attempts + 1)
            .returning(o.c.id, o.c.recipient, o.c.subject, o.c.body, o.c.trace_context,
                       o.c.create_time, o.c.attempts)
        )  # fmt: skip
        with self._engine.begin() as connection:
            rows = connection.execute(statement).all()
        mails = [
            QueuedMail(row_id, Mail(to, subject, body), trace, as_utc(created), attempts)
            for row_id, to, subject, body, trace, created, attempts in rows
        ]
        return sorted(mails, key=lambda m: (m.create_time, m.id))  # RETURNING has no order

    def done(self, mail_id: str) -> None:
        """Forget a mail: the mailer took it, or it is dropped."""
        with self._engine.begin() as connection:
            connection.execute(delete(_outbox).where(_outbox.c.id == mail_id))

    def retry_at(self, mail_id: str, due: dt.datetime) -> None:
        """Give the lease back; the next attempt not before ``due``."""
        with self._engine.begin() as connection:
            connection.execute(update(_outbox).where(_outbox.c.id == mail_id).values(due_time=due))

    def backlog(self, now: dt.datetime) -> tuple[int, float]:
        """How many mails wait, and the oldest one's age in seconds (0 when none)."""
        with self._read_engine.connect() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(_outbox.c.create_time))
            ).one()
        age = (now - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        return int(count), max(age, 0.0)


class MailRelay:
    """Hands queued mail to ``mailer`` on a thread of its own (see the module's notes)."""

    def __init__(
        self,
        outbox: MailOutbox,
        mailer: Mailer,
        clock: Clock = utc_now,
        *,
        poll_seconds: float = 5.0,
        batch: int = 1,
        max_age: dt.timedelta = REGISTRATION_TTL,
    ) -> None:
        self._outbox = outbox
        self._mailer = mailer
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._max_age = max_age
        # Long enough for every mail of a batch: a relay that dies leaves them this long,
        # so one at a time (mail is rare: registrations are rate-limited), 5 s for files.
        self._lease_seconds = 2 * mailer.max_send_seconds * batch
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mail-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A commit queued mail: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = SMTP_TIMEOUT_SECONDS + 5) -> None:
        """Finish the mail being handed over, give the other leases back, and stop; what
        is left waits in the outbox for the next start (or another replica)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_due()
            except Exception as error:  # the database is away: the next poll tries again
                reason = type(error).__name__
                logger.warning("mail: the relay could not read its outbox (%s)", reason)
            self._wake.wait(self._poll_seconds)
            self._wake.clear()

    def deliver_due(self) -> None:
        """Hand over every mail that is due, batch by batch, until none is or we stop."""
        unsent, lag = self._outbox.backlog(self._clock())
        MAIL_UNSENT.set(unsent)
        MAIL_LAG.set(lag)
        if not unsent:
            return
        while not self._stopping.is_set():
            mails = self._outbox.claim(self._batch, self._lease_seconds, self._clock())
            for index, queued in enumerate(mails):
                if self._stopping.is_set():  # the rest go back, for the next relay
                    for left in mails[index:]:
                        self._outbox.retry_at(left.id, self._clock())
                    return
                self._deliver(queued)
            if len(mails) < self._batch:
                return

    def _deliver(self, queued: QueuedMail) -> None:
        now = self._clock()
        if now - queued.create_time > self._max_age:
            logger.warning("mail: %s dropped: older than its link lives", queued.id)
            self._finish(queued, "expired", self._outbox.done)
            return
        with tracing.consumer_span(
            "send mail", queued.trace_context, {"cinema.mail.attempt": str(queued.attempts)}
        ):
            try:
                self._mailer.send(queued.mail)
            except MailNotSent as error:
                if error.permanent:
                    logger.warning("mail: %s dropped: %s", queued.id, error)
                    self._finish(queued, "refused", self._outbox.done)
                    return
                delay = retry_delay(queued.attempts)
                logger.warning(
                    "mail: %s not sent (attempt %d): %s; trying again in %.0f s",
                    queued.id, queued.attempts, error, delay,
                )  # fmt: skip
                due = self._clock() + dt.timedelta(seconds=delay)
                self._finish(queued, "deferred", lambda row: self._outbox.retry_at(row, due))
                return
        self._finish(queued, "sent", self._outbox.done)

    @staticmethod
    def _finish(queued: QueuedMail, outcome: str, record: Callable[[str], None]) -> None:
        record(queued.id)
        MAIL_DELIVERIES.labels(outcome).inc()
