"""Accounts and the rules about them. No gRPC, no SQL.

Emails are stored as given (trimmed) and compared without regard to case through
:func:`email_key`, the lower-cased copy that the database keeps unique. Passwords exist
here only on their way in: a :class:`User` carries the argon2id hash, never the password,
and the hash is left out of its ``repr`` so that it cannot reach a log line by accident.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum

from services.common.context import Role
from services.common.errors import AlreadyExists, Violations
from services.common.ids import new_id

EMAIL_MAX = 254  # RFC 5321: the longest address a mail server accepts
EMAIL_LOCAL_MAX = 64
DISPLAY_NAME_MAX = 100
PASSWORD_MIN = 8
PASSWORD_MAX = 256
UPDATABLE_FIELDS = frozenset({"email", "display_name", "password", "role"})
#: How long a registration's mailed link works.
REGISTRATION_TTL = dt.timedelta(hours=24)
#: Longest registration token accepted (ours are 43 characters).
REGISTRATION_TOKEN_MAX = 200


@dataclass(frozen=True)
class User:
    """An account. ``password_hash`` never leaves the service."""

    id: str
    email: str
    display_name: str
    role: Role
    password_hash: str = field(repr=False)
    create_time: dt.datetime
    update_time: dt.datetime

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @classmethod
    def new(
        cls, email: str, display_name: str, role: Role, password_hash: str, now: dt.datetime
    ) -> User:
        """A new account with a fresh id, created and last changed ``now``."""
        return cls(
            id=new_id(),
            email=email,
            display_name=display_name,
            role=role,
            password_hash=password_hash,
            create_time=now,
            update_time=now,
        )


@dataclass(frozen=True)
class OwnedMovie:
    """A movie in an account's library: bought in a paid order. ``id`` is the library
    entry's own (time-ordered) id, which pages the library."""

    id: str
    movie_id: str
    title: str
    order_id: str
    purchase_time: dt.datetime


@dataclass(frozen=True)
class Session:
    """A login session of an account."""

    id: str
    user_id: str
    create_time: dt.datetime
    refresh_time: dt.datetime
    expire_time: dt.datetime
    revoke_time: dt.datetime | None = None

    def live(self, now: dt.datetime) -> bool:
        return self.revoke_time is None and now < self.expire_time


class RefreshUse(Enum):
    """What exchanging a refresh token found (OAuth 2.0 Security BCP, token rotation)."""

    #: Never exchanged before: it is spent now.
    FIRST = "first"
    #: Exchanged before by this same call: the gateway repeating a call whose answer was
    #: lost (a replica died after its commit). Its answer is given again, with new tokens.
    REPEAT = "repeat"
    #: Exchanged before by another call: one of two holders is not the owner.
    REUSED = "reused"


#: Failed logins for one email before the next attempt must wait.
THROTTLE_AFTER = 5
#: The longest such wait, in seconds.
THROTTLE_MAX_SECONDS = 60
#: Failures older than this are forgotten.
THROTTLE_WINDOW = dt.timedelta(minutes=15)


def login_wait(failures: int, last_failure: dt.datetime, now: dt.datetime) -> float:
    """Seconds an attempt for an email must still wait after ``failures`` failed ones (the
    last at ``last_failure``): none for the first few, then one second more per failure,
    at most :data:`THROTTLE_MAX_SECONDS`. The same for every email, account or not."""
    if failures < THROTTLE_AFTER or now - last_failure > THROTTLE_WINDOW:
        return 0.0
    wait = min(failures - THROTTLE_AFTER + 1, THROTTLE_MAX_SECONDS)
    return max(0.0, wait - (now - last_failure).total_seconds())


@dataclass(frozen=True)
class PaidMovie:
    """One movie of a paid order, as an OrderPaid event tells it."""

    movie_id: str
    title: str


@dataclass(frozen=True)
class UserFields:
    """The client-settable fields of an account, as sent (before validation).

    ``role`` is ``""`` when the client left it unset (ROLE_UNSPECIFIED), otherwise the
    role's value (``"user"``, ``"admin"``) or, for an enum number this service does not
    know, that number as text; :func:`check_fields` turns it into a :class:`Role`.
    """

    email: str = ""
    display_name: str = ""
    password: str = field(default="", repr=False)
    current_password: str = field(default="", repr=False)
    role: str = ""


@dataclass(frozen=True)
class CheckedFields:
    """Validated, normalised fields; only those that were checked are meaningful."""

    email: str
    display_name: str
    password: str = field(repr=False)
    role: Role


@dataclass(frozen=True)
class Registration:
    """A registration waiting for the link its mail carried, by the hash of that link's
    token. ``password_hash`` is None when the address had an account already (the mail was
    a notice, and the registration makes nothing); ``user_id`` is the account the link
    made, once it was followed."""

    token_hash: str
    email: str
    display_name: str
    password_hash: str | None = field(repr=False)
    create_time: dt.datetime
    expire_time: dt.datetime
    user_id: str | None = None

    @property
    def id(self) -> str:
        """What an idempotent create knows it by; never shown to the caller."""
        return self.token_hash


class EmailTaken(AlreadyExists):
    """Another account has this email (in any case)."""

    reason = "EMAIL_TAKEN"

    def __init__(self, field_path: str = "user.email") -> None:
        super().__init__(
            "an account with this email exists already", metadata={"field": field_path}
        )


def normalise_email(email: str) -> str:
    """The email as stored and shown: surrounding whitespace removed, case kept."""
    return email.strip()


def email_key(email: str) -> str:
    """What makes two emails the same account: the trimmed, lower-cased address.

    Lower-casing the local part too is stricter than RFC 5321 allows in theory and what
    every mail provider does in practice; it stops ``Bob@x`` and ``bob@x`` from being two
    accounts.
    """
    return normalise_email(email).lower()


def check_email(email: str, field_path: str, violations: Violations) -> str:
    """The normalised email; a violation when it is not a plausible address.

    A sensible shape, not RFC 5322 in full: one ``@`` between a non-empty local part
    (at most 64 characters) and a non-empty domain, no whitespace or control characters,
    at most 254 characters. Whether mail arrives is only known by sending some.
    """
    clean = normalise_email(email)
    if not clean:
        violations.add(field_path, "is required")
        return clean
    local, at, domain = clean.partition("@")
    if len(clean) > EMAIL_MAX:
        violations.add(field_path, f"must be at most {EMAIL_MAX} characters")
    elif any(ch.isspace() or not ch.isprintable() for ch in clean):
        violations.add(field_path, "must not contain spaces or control characters")
    elif not at or "@" in domain or not local or not domain:
        violations.add(field_path, "must be an email address such as name@example.com")
    elif len(local) > EMAIL_LOCAL_MAX:
        violations.add(
            field_path, f"the part before @ must be at most {EMAIL_LOCAL_MAX} characters"
        )
    return clean


def check_display_name(display_name: str, field_path: str, violations: Violations) -> str:
    """The trimmed display name; a violation unless it has 1 to 100 characters."""
    clean = display_name.strip()
    if not clean:
        violations.add(field_path, "is required")
    elif len(clean) > DISPLAY_NAME_MAX:
        violations.add(field_path, f"must be at most {DISPLAY_NAME_MAX} characters")
    return clean


def check_password(password: str, field_path: str, violations: Violations) -> str:
    """The password as sent (never trimmed: every character counts); a violation unless
    it has 8 to 256 characters. The description never repeats the password."""
    if not password:
        violations.add(field_path, "is required")
    elif len(password) < PASSWORD_MIN:
        violations.add(field_path, f"must be at least {PASSWORD_MIN} characters")
    elif len(password) > PASSWORD_MAX:
        violations.add(field_path, f"must be at most {PASSWORD_MAX} characters")
    return password


def parse_role(role: str, field_path: str, violations: Violations) -> Role:
    """The role named by ``role``; unset means ROLE_USER (as the contract's enum says)."""
    if not role:
        return Role.USER
    try:
        return Role(role)
    except ValueError:
        violations.add(field_path, "must be ROLE_USER or ROLE_ADMIN")
        return Role.USER


def check_fields(
    fields: UserFields,
    prefix: str,
    violations: Violations,
    only: frozenset[str] = UPDATABLE_FIELDS,
) -> CheckedFields:
    """Validated, normalised fields; problems go to ``violations``. ``only`` limits the
    checks to the fields being written."""
    email = normalise_email(fields.email)
    if "email" in only:
        email = check_email(fields.email, f"{prefix}.email", violations)
    display_name = fields.display_name.strip()
    if "display_name" in only:
        display_name = check_display_name(fields.display_name, f"{prefix}.display_name", violations)
    if "password" in only:
        check_password(fields.password, f"{prefix}.password", violations)
    role = Role.USER
    if "role" in only:
        role = parse_role(fields.role, f"{prefix}.role", violations)
    return CheckedFields(
        email=email, display_name=display_name, password=fields.password, role=role
    )
