"""Mail the user service sends: a registration's link, or a notice to an address that has
an account already. Which mailer is a setting (``CINEMA_MAIL_URL``):

* ``file:///DIR`` (the default: ``mail/`` in the data directory): each mail is one RFC 5322
  file, ``DIR/<time>-<random>.eml``, written whole (a temporary name, then a rename), so a
  reader never sees half a mail. What ``cinema up`` uses on a bare machine, where there is
  no mail server: a person reads the link there (README "Accounts").
* ``smtp://[USER:PASSWORD@]HOST[:PORT]`` hands the mail to an SMTP server (port 25 by
  default; STARTTLS when the server offers it, and required when a password is given),
  ``smtps://`` with TLS from the start (port 465). A production setup points it at the
  local MTA or a provider's relay, which queues and retries delivery.

A mail is handed over inside the registration's transaction, before it commits: when the
mailer refuses it, nothing is stored and the caller gets UNAVAILABLE (so the client tries
again). The other order would store registrations whose link never left. The cost is a
commit that fails after the mail left: a mail whose link is unknown, which the person
answers by registering again. The SMTP connection's timeout is the call's remaining time.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import smtplib
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from services.common.errors import Unavailable

#: How long the SMTP exchange of one mail may take when the call sets no deadline.
SMTP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Mail:
    """One plain-text mail to one address."""

    to: str
    subject: str
    text: str


class Mailer(Protocol):
    def send(self, mail: Mail, timeout: float | None = None) -> None:
        """Hand ``mail`` over for delivery, within ``timeout`` seconds when given;
        :class:`Unavailable` when it could not be."""
        ...


def _message(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].rstrip(">") or None)
    message.set_content(mail.text)
    return message


class DirectoryMailer:
    """Mail as files in a directory (a mail drop for a machine without a mail server)."""

    def __init__(self, directory: pathlib.Path, sender: str) -> None:
        self._directory = directory
        self._sender = sender

    @property
    def directory(self) -> pathlib.Path:
        return self._directory

    def send(self, mail: Mail, timeout: float | None = None) -> None:
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.eml"
        partial = self._directory / f".{name}.part"
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            # The link in it is a credential until it is used: readable by this user only.
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(_message(mail, self._sender).as_bytes())
            partial.rename(self._directory / name)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise Unavailable(f"the mail could not be written ({error.strerror})") from None


class SmtpMailer:
    """Mail through an SMTP server, one connection per mail."""

    def __init__(self, url: str, sender: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._implicit_tls = parts.scheme == "smtps"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if self._implicit_tls else 25)
        self._user = urllib.parse.unquote(parts.username) if parts.username else None
        self._password = urllib.parse.unquote(parts.password) if parts.password else None
        self._sender = sender

    def __repr__(self) -> str:  # never the password
        return (
            f"SmtpMailer({'smtps' if self._implicit_tls else 'smtp'}://{self._host}:{self._port})"
        )

    def send(self, mail: Mail, timeout: float | None = None) -> None:
        wait = SMTP_TIMEOUT_SECONDS if timeout is None else max(timeout, 0.05)
        context = ssl.create_default_context()
        try:
            client: smtplib.SMTP
            if self._implicit_tls:
                client = smtplib.SMTP_SSL(self._host, self._port, timeout=wait, context=context)
            else:
                client = smtplib.SMTP(self._host, self._port, timeout=wait)
            with client:
                if not self._implicit_tls:
                    client.ehlo()
                    if client.has_extn("starttls"):
                        client.starttls(context=context)
                        client.ehlo()
                    elif self._password is not None:
                        raise Unavailable("the mail server offers no STARTTLS for the login")
                if self._user is not None and self._password is not None:
                    client.login(self._user, self._password)
                client.send_message(_message(mail, self._sender))
        except (OSError, smtplib.SMTPException) as error:
            # Not the server's text: it may quote the address or the credentials.
            reason = type(error).__name__
            raise Unavailable(f"the mail server refused the mail ({reason})") from None


def mailer_from_url(url: str, sender: str) -> Mailer:
    """The mailer ``CINEMA_MAIL_URL`` names (the settings have checked its scheme)."""
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return DirectoryMailer(pathlib.Path(urllib.parse.unquote(rest)), sender)
    return SmtpMailer(url, sender)
