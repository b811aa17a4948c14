"""The mail Cinema's user service writes to a directory (``CINEMA_MAIL_URL=file:///DIR``),
read the way a person would (:mod:`services.mailbox`, what ``cinema mail`` prints): the
newest mail to an address, and the link in it."""

from __future__ import annotations

import pathlib
from email.message import EmailMessage
from typing import Any

from cinema.v1 import user_pb2, user_pb2_grpc
from services.mailbox import LINK, messages

__all__ = ["LINK", "Mailbox", "register"]


class Mailbox:
    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        """Every mail (to ``to`` only, when given, trimmed and in any case), oldest first."""
        return messages(self.directory, to)

    def latest(self, to: str) -> EmailMessage:
        found = self.messages(to)
        assert found, f"no mail to {to} in {self.directory}"
        return found[-1]

    def link(self, to: str) -> tuple[str, str]:
        """The newest registration link sent to ``to``: its base URL and its token."""
        body = self.latest(to).get_content()
        match = LINK.search(body)
        assert match, f"the newest mail to {to} has no registration link:\n{body}"
        return match.group(1), match.group(2)

    def token(self, to: str) -> str:
        return self.link(to)[1]


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
    users.CreateUser(
        user_pb2.CreateUserRequest(
            user=user_pb2.User(email=email, display_name=display_name, password=password),
            request_id=request_id,
        ),
        **call,
    )
    made: user_pb2.User = users.VerifyEmail(
        user_pb2.VerifyEmailRequest(token=mailbox.token(email), password=password)
    )
    return made
