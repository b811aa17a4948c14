"""The mail Cinema's user service writes to a directory (``CINEMA_MAIL_URL=file:///DIR``),
read the way a person would (:mod:`services.mailbox`, what ``cinema mail`` prints): the
newest mail to an address, and the link in it.

Mail leaves through the user service's outbox, a moment after the call that queued it
returned (services/user/mail_relay.py), so what reads a mail waits for it (up to
``WAIT_SECONDS``)."""

from __future__ import annotations

import pathlib
import time
from email.message import EmailMessage
from typing import Any

from sqlalchemy import Engine, text

from cinema.v1 import user_pb2, user_pb2_grpc
from services.common.db import make_engine
from services.mailbox import LINK, messages

__all__ = ["LINK", "Mailbox", "register", "wait_until_sent"]

#: How long a test waits for a mail the service queued: past a lease a killed replica left
#: (5 s for files) and the next replica's poll (5 s).
WAIT_SECONDS = 30.0


class Mailbox:
    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        """Every mail (to ``to`` only, when given, trimmed and in any case), oldest first."""
        return messages(self.directory, to)

    def wait(self, to: str, count: int = 1) -> list[EmailMessage]:
        """Every mail to ``to`` once there are at least ``count`` of them."""
        deadline = time.monotonic() + WAIT_SECONDS
        while len(found := self.messages(to)) < count:
            assert time.monotonic() < deadline, (
                f"{len(found)} mails to {to} in {self.directory} after {WAIT_SECONDS} s, "
                f"not {count}"
            )
            time.sleep(0.02)
        return found

    def latest(self, to: str, count: int = 1) -> EmailMessage:
        """The newest mail to ``to``, once there are ``count``."""
        return self.wait(to, count)[-1]

    def link(self, to: str, count: int = 1) -> tuple[str, str]:
        """The newest registration link sent to ``to`` (once ``count`` mails went to it):
        its base URL and its token."""
        body = self.latest(to, count).get_content()
        match = LINK.search(body)
        assert match, f"the newest mail to {to} has no registration link:\n{body}"
        return match.group(1), match.group(2)

    def token(self, to: str, count: int = 1) -> str:
        return self.link(to, count)[1]


def register(
    users: user_pb2_grpc.UserServiceStub,
    mailbox: Mailbox,
    email: str,
    password: str,
    display_name: str = "Film Fan",
    **call: Any,
) -> user_pb2.User:
    """Register as anyone does (CreateUser, then the link in the mail) and return the
    account made. ``call`` goes to CreateUser (``request_id``, ``metadata``...)."""
    request_id = call.pop("request_id", "")
    before = len(mailbox.messages(email))
    users.CreateUser(
        user_pb2.CreateUserRequest(
            user=user_pb2.User(email=email, display_name=display_name, password=password),
            request_id=request_id,
        ),
        **call,
    )
    made: user_pb2.User = users.VerifyEmail(
        user_pb2.VerifyEmailRequest(token=mailbox.token(email, before + 1), password=password)
    )
    return made


def wait_until_sent(database: str | Engine) -> None:
    """Wait until the user service's mail outbox (in ``database``, a URL or an engine) is
    empty: every mail queued so far is in the mailbox (a row goes only after its mail was
    written), so a count of the mailbox is final. For "no mail was sent" checks."""
    engine = make_engine(database, pool_size=1) if isinstance(database, str) else database
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        while True:
            with engine.connect() as connection:
                waiting = connection.execute(text("SELECT count(*) FROM mail_outbox")).scalar()
            if not waiting:
                return
            assert time.monotonic() < deadline, f"{waiting} mails still queued"
            time.sleep(0.02)
    finally:
        if isinstance(database, str):
            engine.dispose()
