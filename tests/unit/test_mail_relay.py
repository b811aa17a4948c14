"""The mail relay's rules on a real SQLite outbox, with a mailer that records what it is
given: expired mail is dropped unsent, a failed attempt waits its delay, a final refusal
ends the mail, a stop gives unsent leases back. And which SMTP failures are final."""

from __future__ import annotations

import datetime as dt
import pathlib
import smtplib
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from services.common import migrations
from services.common.db import make_engine
from services.user.mail import Mail, MailNotSent, is_final
from services.user.mail_relay import MailOutbox, MailRelay, retry_delay
from services.user.repository import SqlAlchemyMailQueue

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


class Mailer:
    """Takes every mail, or raises ``failure`` for each."""

    max_send_seconds = 1.0

    def __init__(self, failure: MailNotSent | None = None) -> None:
        self.sent: list[Mail] = []
        self.failure = failure
        self.on_send: Callable[[], None] = lambda: None

    def send(self, mail: Mail) -> None:
        self.on_send()
        if self.failure is not None:
            raise self.failure
        self.sent.append(mail)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def engine(tmp_path: pathlib.Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'user.db'}", pool_size=1)
    migrations.upgrade(engine, "user")
    yield engine
    engine.dispose()


def queue(engine: Engine, *mails: tuple[str, dt.datetime]) -> None:
    with engine.begin() as connection:
        for to, created in mails:
            SqlAlchemyMailQueue(connection).add(Mail(to, "Subject", "Body"), created)


def queued(engine: Engine) -> list[tuple[str, int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT recipient, attempts, due_time FROM mail_outbox ORDER BY create_time")
        )
        return [(to, attempts, str(due)) for to, attempts, due in rows]


def relay(engine: Engine, mailer: Mailer, clock: Clock, batch: int = 10) -> MailRelay:
    """A relay that claims ``batch`` mails at a time."""
    return MailRelay(MailOutbox(engine), mailer, clock, batch=batch)


def test_retries_wait_longer_each_time_up_to_five_minutes() -> None:
    assert [retry_delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_mail_is_sent_oldest_first_and_forgotten(engine: Engine) -> None:
    clock, mailer = Clock(), Mailer()
    queue(engine, ("b@x.test", NOW), ("a@x.test", NOW - dt.timedelta(seconds=1)))
    relay(engine, mailer, clock, batch=1).deliver_due()
    assert [m.to for m in mailer.sent] == ["a@x.test", "b@x.test"]
    assert queued(engine) == []


def test_a_mail_older_than_its_link_lives_is_dropped_unsent(engine: Engine) -> None:
    clock, mailer = Clock(), Mailer()
    queue(engine, ("old@x.test", NOW - dt.timedelta(hours=24, seconds=1)), ("new@x.test", NOW))
    relay(engine, mailer, clock).deliver_due()
    assert [m.to for m in mailer.sent] == ["new@x.test"] and queued(engine) == []


def test_a_failed_attempt_waits_its_delay_and_a_final_refusal_ends_the_mail(
    engine: Engine,
) -> None:
    clock, mailer = Clock(), Mailer(MailNotSent("away"))
    queue(engine, ("a@x.test", NOW))
    mail = relay(engine, mailer, clock)
    mail.deliver_due()
    ((_, attempts, due),) = queued(engine)
    assert attempts == 1 and due.startswith("2026-12-05 12:00:01")
    mailer.failure = None
    mail.deliver_due()  # not due yet: nothing is tried
    assert mailer.sent == []
    clock.now += dt.timedelta(seconds=1)
    mailer.failure = MailNotSent("away")
    mail.deliver_due()
    ((_, attempts, due),) = queued(engine)
    assert attempts == 2 and due.startswith("2026-12-05 12:00:03")  # 2 s after the second
    clock.now += dt.timedelta(seconds=2)
    mailer.failure = MailNotSent("no such mailbox", permanent=True)
    mail.deliver_due()
    assert queued(engine) == [] and mailer.sent == []


def test_a_stop_gives_the_leases_it_did_not_use_back(engine: Engine) -> None:
    clock, mailer = Clock(), Mailer()
    queue(engine, ("a@x.test", NOW - dt.timedelta(seconds=1)), ("b@x.test", NOW))
    mail = relay(engine, mailer, clock)
    mailer.on_send = mail.stop  # the stop comes while the first mail is being handed over
    mail.deliver_due()
    assert [m.to for m in mailer.sent] == ["a@x.test"]
    # The second is due at once again, for the next start or another replica.
    ((to, attempts, due),) = queued(engine)
    assert (to, attempts, due[:19]) == ("b@x.test", 1, "2026-12-05 12:00:00")


@pytest.mark.parametrize(
    ("error", "final"),
    [
        (smtplib.SMTPRecipientsRefused({"a@x.test": (550, b"no such mailbox")}), True),
        (smtplib.SMTPRecipientsRefused({"a@x.test": (451, b"try later")}), False),
        (smtplib.SMTPSenderRefused(553, b"sender refused", "shop@x.test"), True),
        (smtplib.SMTPDataError(554, b"spam"), True),
        (smtplib.SMTPDataError(452, b"no space"), False),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), False),
        (smtplib.SMTPServerDisconnected("gone"), False),
        (ConnectionRefusedError(111, "refused"), False),
        (TimeoutError(), False),
    ],
)
def test_only_a_5xx_refusal_of_the_address_or_the_mail_is_final(
    error: BaseException, final: bool
) -> None:
    assert is_final(error) is final
