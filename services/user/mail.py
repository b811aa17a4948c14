"""Mail the user service sends: a registration's link, or a notice to an address that has
an account already. Which mailer is a setting (``CINEMA_MAIL_URL``):

* ``file:///DIR`` (the default: ``mail/`` in the data directory): each mail is one RFC 5322
  file, ``DIR/<time>-<random>.eml``, written whole (a temporary name, then a rename), so a
  reader never sees half a mail. What ``cinema up`` uses on a bare machine, where there is
  no mail server: a person reads the link there (README "Accounts").
* ``smtp://[USER:PASSWORD@]HOST[:PORT]`` hands the mail to an SMTP server (port 25 by
  default; STARTTLS when the server offers it, and required when a password is given),
  ``smtps://`` with TLS from the start (port 465). A production setup points it at the
  local MTA or a provider's relay, which queues and retries delivery onwards.

No call waits for a mailer: a use case queues its mail in its own transaction (the
``mail_outbox`` table), and the mail relay (:mod:`services.user.mail_relay`) hands it
over after the commit, retrying while the mailer is away.
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

#: How long one step of the SMTP exchange (connect, a command, the data) may wait.
SMTP_TIMEOUT_SECONDS = 10.0


class MailNotSent(Exception):
    """The mailer did not take a mail. ``permanent``: it never will (the server refused
    the address or the mail with a 5xx reply), so trying again is pointless; otherwise
    (no answer, a 4xx reply, a disk error) a later attempt may succeed. The message names
    no address and no server text: either may quote the recipient or the credentials."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Mail:
    """One plain-text mail to one address."""

    to: str
    subject: str
    text: str


class Mailer(Protocol):
    #: The longest a hand-over may take: the relay's lease on a mail is twice as long.
    max_send_seconds: float

    def send(self, mail: Mail) -> None:
        """Hand ``mail`` over for delivery; :class:`MailNotSent` when it was not."""
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

    max_send_seconds = 2.5  # one small file

    def __init__(self, directory: pathlib.Path, sender: str) -> None:
        self._directory = directory
        self._sender = sender

    @property
    def directory(self) -> pathlib.Path:
        return self._directory

    def send(self, mail: Mail) -> None:
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
            raise MailNotSent(f"the mail could not be written ({error.strerror})") from None


class SmtpMailer:
    """Mail through an SMTP server, one connection per mail."""

    # Each step may wait SMTP_TIMEOUT_SECONDS: connect, EHLO, STARTTLS, login, the mail.
    max_send_seconds = 6 * SMTP_TIMEOUT_SECONDS

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

    def send(self, mail: Mail) -> None:
        wait = SMTP_TIMEOUT_SECONDS
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
                        raise MailNotSent("the mail server offers no STARTTLS for the login")
                if self._user is not None and self._password is not None:
                    client.login(self._user, self._password)
                client.send_message(_message(mail, self._sender))
        except (OSError, smtplib.SMTPException) as error:
            # Not the server's text: it may quote the address or the credentials.
            code = reply_code(error)
            reason = type(error).__name__ + (f" {code}" if code else "")
            raise MailNotSent(
                f"the mail server did not take the mail ({reason})", permanent=is_final(error)
            ) from None


def is_final(error: BaseException) -> bool:
    """Whether an SMTP failure is for good: a 5xx refusal of the address or the mail. A
    failed login (535) is the operator's to fix, and the mail waits for it; a 4xx reply,
    a timeout or a refused connection may pass."""
    code = reply_code(error)
    return (
        code is not None and code >= 500 and not isinstance(error, smtplib.SMTPAuthenticationError)
    )


def reply_code(error: BaseException) -> int | None:
    """The SMTP reply code of a refusal: the one refused recipient's, the sender's, the
    data's; None for a connection or TLS failure."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]  # one recipient per mail
        return min(codes) if codes else None
    code = getattr(error, "smtp_code", None)
    return code if isinstance(code, int) and code > 0 else None


def mailer_from_url(url: str, sender: str) -> Mailer:
    """The mailer ``CINEMA_MAIL_URL`` names (the settings have checked its scheme)."""
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return DirectoryMailer(pathlib.Path(urllib.parse.unquote(rest)), sender)
    return SmtpMailer(url, sender)
