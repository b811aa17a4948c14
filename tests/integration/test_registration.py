"""Registration without enumeration, on a real user service (SQLite and PostgreSQL): the
same answer for a known and a new email, a mailed link that makes the account, and mail
that leaves through the outbox: no call waits for the mail server, a server that is away
delays the mail, one that refuses the address ends it. The SMTP mailer talks to a real
SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import prometheus_client
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text

from cinema.v1 import user_pb2, user_pb2_grpc
from services.common.db import make_engine
from tests.conftest import DatabaseFactory
from tests.support.errors import call_error
from tests.support.mail import LINK, Mailbox, register, wait_until_sent
from tests.support.servers import RunningService, service_settings, start_service
from tests.support.tokens import SigningKeys

PASSWORD = "s3cret-Passw0rd"
ADMIN_EMAIL = "boss@registration.test"
ADMIN_PASSWORD = "boss-password-1"


@dataclass
class Registry:
    service: RunningService
    users: user_pb2_grpc.UserServiceStub
    mailbox: Mailbox
    url: str


@pytest.fixture(scope="module")
def registry(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Registry]:
    url = databases("user_registration")
    env = keys.env() | {"CINEMA_ADMIN_EMAIL": ADMIN_EMAIL, "CINEMA_ADMIN_PASSWORD": ADMIN_PASSWORD}
    service = start_service("user", service_settings("user", url, env))
    try:
        yield Registry(
            service, user_pb2_grpc.UserServiceStub(service.channel()), Mailbox(keys.mail_dir), url
        )
    finally:
        service.stop()


def fresh_email() -> str:
    return f"reg-{uuid.uuid4().hex[:12]}@example.test"


def create(
    users: user_pb2_grpc.UserServiceStub,
    address: str,
    password: str = PASSWORD,
    request_id: str = "",
) -> tuple[user_pb2.User, tuple[tuple[str, str | bytes], ...]]:
    """CreateUser's answer and trailing metadata, called as anyone (no token)."""
    request = user_pb2.CreateUserRequest(
        user=user_pb2.User(email=address, display_name="Same Name", password=password),
        request_id=request_id,
    )
    reply, rpc = users.CreateUser.with_call(request)
    return reply, tuple(rpc.trailing_metadata() or ())


def verify(
    users: user_pb2_grpc.UserServiceStub, token: str, password: str = PASSWORD
) -> user_pb2.User:
    """Follow a registration's link, with the password it chose."""
    made: user_pb2.User = users.VerifyEmail(
        user_pb2.VerifyEmailRequest(token=token, password=password)
    )
    return made


def login_code(users: user_pb2_grpc.UserServiceStub, address: str, password: str) -> str:
    try:
        users.Login(user_pb2.LoginRequest(email=address, password=password))
    except grpc.RpcError as error:
        failure = call_error(error)
        return f"{failure.code.name} {failure.reason} {failure.message}"
    return "OK"


def rows(url: str, sql: str, **params: object) -> list[tuple[object, ...]]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_a_known_and_a_new_email_get_the_same_answer(registry: Registry) -> None:
    known = fresh_email()
    register(registry.users, registry.mailbox, known, "owners-password-1", "Same Name")
    new = fresh_email()
    known_reply, known_trailers = create(registry.users, known)
    new_reply, new_trailers = create(registry.users, new)

    # Byte for byte the same but for the address itself; nothing names an account.
    assert known_reply.email == known and new_reply.email == new
    known_reply.email = new_reply.email = ""
    assert known_reply.SerializeToString() == new_reply.SerializeToString()
    assert not new_reply.id and not new_reply.HasField("create_time")
    assert new_reply.role == user_pb2.ROLE_USER and new_reply.display_name == "Same Name"
    assert [k for k, _ in known_trailers] == [k for k, _ in new_trailers]

    # Until a link is followed, the password just chosen signs nothing in, for either.
    assert login_code(registry.users, new, PASSWORD) == login_code(registry.users, known, PASSWORD)
    assert login_code(registry.users, new, PASSWORD).startswith("UNAUTHENTICATED")
    # The owner's account is untouched.
    assert login_code(registry.users, known, "owners-password-1") == "OK"

    # What tells the two apart is in the mailbox, which only the address's owner reads.
    notice = registry.mailbox.latest(known, 2)  # after the link of its own registration
    assert notice["Subject"] == "Someone tried to register with your Cinema address"
    assert not LINK.search(notice.get_content()), "a notice makes nothing"
    link = registry.mailbox.latest(new)
    assert link["Subject"] == "Confirm your Cinema account"
    for mail in (notice, link):
        assert "Same Name" not in mail.as_string(), "no registrant's text reaches the owner"
    base, token = registry.mailbox.link(new)
    assert base == "http://127.0.0.1:8080", "links start with CINEMA_PUBLIC_URL's default"
    assert len(token) == 43


def test_the_link_makes_the_account_once(registry: Registry) -> None:
    address = fresh_email()
    create(registry.users, address)
    token = registry.mailbox.token(address)
    made = verify(registry.users, token)
    assert made.id and made.email == address and made.role == user_pb2.ROLE_USER
    assert login_code(registry.users, address, PASSWORD) == "OK"
    # A second click answers the same account, and makes no other.
    again = verify(registry.users, token)
    assert again == made
    assert rows(registry.url, "SELECT count(*) FROM users WHERE email = :e", e=address) == [(1,)]
    # The address now has an account: registering it again sends a notice, not a link.
    create(registry.users, address, "another-password-2")
    assert not LINK.search(registry.mailbox.latest(address, 2).get_content())
    assert login_code(registry.users, address, "another-password-2").startswith("UNAUTHENTICATED")


def test_the_link_needs_the_password_the_registration_chose(registry: Registry) -> None:
    # A stranger registers somebody else's address with a password of their choosing; the
    # owner, following the link, does not know it, so no account is opened for the stranger.
    address = fresh_email()
    create(registry.users, address, "strangers-password-1")
    token = registry.mailbox.token(address)
    for wrong, reason in (("owners-guess-1", "REGISTRATION_PASSWORD_MISMATCH"), ("", "")):
        with pytest.raises(grpc.RpcError) as caught:
            verify(registry.users, token, wrong)
        failure = call_error(caught.value)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
        assert set(failure.violations) == {"password"} and failure.reason == (
            reason or "INVALID_ARGUMENT"
        )
        assert "strangers-password-1" not in failure.message
    assert rows(registry.url, "SELECT count(*) FROM users WHERE email = :e", e=address) == [(0,)]
    assert verify(registry.users, token, "strangers-password-1").email == address


def test_only_a_live_link_of_a_free_address_makes_an_account(registry: Registry) -> None:
    # Expired: its registration's time has passed.
    expired = fresh_email()
    create(registry.users, expired)
    rows(
        registry.url,
        "UPDATE registrations SET expire_time = create_time WHERE email = :e",
        e=expired,
    )
    # Two registrations of one address: the first link followed wins, the other is spent.
    twice = fresh_email()
    create(registry.users, twice)
    create(registry.users, twice)
    first, second = (LINK.search(m.get_content()) for m in registry.mailbox.wait(twice, 2))
    assert first and second
    verify(registry.users, second.group(2))
    # An account followed by a delete: its link does not bring it back.
    deleted = fresh_email()
    gone = register(registry.users, registry.mailbox, deleted, PASSWORD)
    admin = registry.users.Login(user_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
    registry.users.DeleteUser(
        user_pb2.DeleteUserRequest(id=gone.id),
        metadata=(("authorization", f"Bearer {admin.access_token}"),),
    )

    errors = []
    for token in (
        registry.mailbox.token(expired),
        first.group(2),
        registry.mailbox.token(deleted),
        "x" * 43,
    ):
        with pytest.raises(grpc.RpcError) as caught:
            verify(registry.users, token)
        errors.append(call_error(caught.value))
    assert {e.code for e in errors} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert {(e.reason, e.message, tuple(e.violations)) for e in errors} == {
        (errors[0].reason, errors[0].message, ("token",))
    }, "one answer for every token that makes nothing"
    assert errors[0].reason == "REGISTRATION_TOKEN_INVALID"
    assert login_code(registry.users, expired, PASSWORD).startswith("UNAUTHENTICATED")

    for bad in ("", "t" * 201):
        with pytest.raises(grpc.RpcError) as caught:
            verify(registry.users, bad)
        failure = call_error(caught.value)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT and set(failure.violations) == {
            "token"
        }

    # The next registration clears the expired one away.
    create(registry.users, fresh_email())
    assert rows(registry.url, "SELECT count(*) FROM registrations WHERE email = :e", e=expired) == [
        (0,)
    ]


def test_a_repeated_create_answers_alike_and_mails_once(registry: Registry) -> None:
    address = fresh_email()
    key = str(uuid.uuid4())
    first, _ = create(registry.users, address, request_id=key)
    again, _ = create(registry.users, address, request_id=key)
    assert again == first
    wait_until_sent(registry.url)
    assert len(registry.mailbox.messages(address)) == 1


class _Inbox:
    """aiosmtpd's handler: keeps each message it is given. ``refuse`` answers every
    recipient with that reply instead; with ``hold``, a message is taken only once it is
    set (``holding`` is set while one waits)."""

    def __init__(self, refuse: str = "", hold: threading.Event | None = None) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.arrived = threading.Event()
        self.refuse = refuse
        self.hold = hold
        self.holding = threading.Event()

    async def handle_RCPT(self, server: object, session: object, envelope: object,
                          address: str, rcpt_options: list[str]) -> str:  # fmt: skip
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        if self.hold is not None:
            self.holding.set()
            await asyncio.to_thread(self.hold.wait)  # the server's loop goes on meanwhile
        content = envelope.content  # type: ignore[attr-defined]
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(message)
        self.arrived.set()
        return "250 OK"


def test_the_smtp_mailer_delivers_the_link(
    keys: SigningKeys, databases: DatabaseFactory, unused_tcp_port: int
) -> None:
    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=unused_tcp_port)
    smtp.start()
    url = databases("user_registration_smtp")
    env = keys.env() | {
        "CINEMA_MAIL_URL": f"smtp://127.0.0.1:{unused_tcp_port}",
        "CINEMA_MAIL_FROM": "Cinema <shop@cinema.test>",
        "CINEMA_PUBLIC_URL": "https://shop.cinema.test/",
    }
    service = start_service("user", service_settings("user", url, env))
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        address = fresh_email()
        create(users, address)
        assert inbox.arrived.wait(5)
        (message,) = inbox.messages
        assert message["To"] == address and message["From"] == "Cinema <shop@cinema.test>"
        match = LINK.search(message.get_content())
        assert match and match.group(1) == "https://shop.cinema.test"
        made = verify(users, match.group(2))
        assert made.email == address
    finally:
        service.stop()
        smtp.stop()


def deliveries(outcome: str) -> float:
    """The mail relay's count of ``outcome`` in this process (the services run in it)."""
    value = prometheus_client.REGISTRY.get_sample_value(
        "cinema_mail_deliveries_total", {"outcome": outcome}
    )
    return value or 0.0


@contextlib.contextmanager
def smtp_user_service(
    keys: SigningKeys, url: str, port: int
) -> Iterator[user_pb2_grpc.UserServiceStub]:
    env = keys.env() | {"CINEMA_MAIL_URL": f"smtp://127.0.0.1:{port}"}
    service = start_service("user", service_settings("user", url, env))
    try:
        yield user_pb2_grpc.UserServiceStub(service.channel())
    finally:
        service.stop()


def test_no_call_waits_for_the_mail_server(
    keys: SigningKeys, databases: DatabaseFactory, unused_tcp_port: int
) -> None:
    release = threading.Event()
    inbox = _Inbox(hold=release)
    smtp = Controller(inbox, hostname="127.0.0.1", port=unused_tcp_port)
    smtp.start()
    url = databases("user_registration_slow_mail")
    try:
        with smtp_user_service(keys, url, unused_tcp_port) as users:
            first, second = fresh_email(), fresh_email()
            create(users, first)
            assert inbox.holding.wait(5), "the relay hands the mail over"
            # The mail server holds the first mail and answers nothing: registrations go
            # on (a send inside the call held it, and SQLite's write lock, until then).
            reply = users.CreateUser(
                user_pb2.CreateUserRequest(
                    user=user_pb2.User(email=second, display_name="N", password=PASSWORD)
                ),
                timeout=5,
            )
            assert reply.email == second and not inbox.messages
            release.set()
            assert inbox.arrived.wait(5)
            wait_until_sent(url)
            assert sorted(str(m["To"]) for m in inbox.messages) == sorted([first, second])
    finally:
        release.set()
        smtp.stop()


def test_a_mail_server_that_is_away_delays_the_mail_and_fails_no_call(
    keys: SigningKeys,
    databases: DatabaseFactory,
    unused_tcp_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = databases("user_registration_mail_away")
    deferred = deliveries("deferred")
    with smtp_user_service(keys, url, unused_tcp_port) as users:
        address = fresh_email()
        reply, _ = create(users, address)  # nothing listens on the port yet
        assert reply.email == address
        deadline = time.monotonic() + 5
        while deliveries("deferred") == deferred:
            assert time.monotonic() < deadline, "the relay tries, and fails"
            time.sleep(0.02)
        assert rows(url, "SELECT count(*) FROM registrations WHERE email = :e", e=address) == [(1,)]
        assert rows(url, "SELECT count(*) FROM mail_outbox") == [(1,)], "the mail waits"

        # The server comes back: the next attempt (after 1 s, then 2 s...) delivers it.
        inbox = _Inbox()
        smtp = Controller(inbox, hostname="127.0.0.1", port=unused_tcp_port)
        smtp.start()
        try:
            assert inbox.arrived.wait(10), "the mail leaves once the server is back"
            (message,) = inbox.messages
            match = LINK.search(message.get_content())
            assert message["To"] == address and match
            assert verify(users, match.group(2)).email == address
        finally:
            smtp.stop()
        wait_until_sent(url)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "not sent" in logged and address not in logged, "a mail is logged by its id only"


def test_a_refused_address_ends_its_mail(
    keys: SigningKeys, databases: DatabaseFactory, unused_tcp_port: int
) -> None:
    inbox = _Inbox(refuse="550 5.1.1 no such mailbox")
    smtp = Controller(inbox, hostname="127.0.0.1", port=unused_tcp_port)
    smtp.start()
    url = databases("user_registration_mail_refused")
    refused = deliveries("refused")
    try:
        with smtp_user_service(keys, url, unused_tcp_port) as users:
            create(users, fresh_email())
            wait_until_sent(url)  # dropped, not retried: a 5xx for the address is final
            assert deliveries("refused") == refused + 1 and not inbox.messages
    finally:
        smtp.stop()
