"""The user service's tables (SQLAlchemy 2.0). Only this service reads them.

``email`` keeps the address as the person typed it; ``email_key`` is its lower-cased copy
and carries the unique constraint, so two registrations racing with ``Bob@x`` and
``bob@x`` are decided by the database, not by a check that both could pass.

``request_key`` and ``request_hash`` make CreateUser idempotent
(:mod:`services.common.idempotency`): the unique index lets one account per key in,
across replicas. Both are NULL for an account created without a key (the first admin,
say), and NULLs never collide in a unique index (PostgreSQL and SQLite alike).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common import handled_calls
from services.common.context import CALL_ID_MAX
from services.common.events import tables as event_tables
from services.common.idempotency import REQUEST_HASH_LENGTH, REQUEST_KEY_MAX

EMAIL_KEY_CONSTRAINT = "uq_users_email_key"
REQUEST_KEY_INDEX = "uq_users_request_key"
REGISTRATION_REQUEST_KEY_INDEX = "uq_registrations_request_key"


class Base(DeclarativeBase):
    """Metadata of the user database."""


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("email_key", name=EMAIL_KEY_CONSTRAINT),
        CheckConstraint("role IN ('user', 'admin')", name="ck_users_role"),
        Index(REQUEST_KEY_INDEX, "request_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    email_key: Mapped[str] = mapped_column(String(254))
    display_name: Mapped[str] = mapped_column(String(100))
    # Indexed: the first-admin check and the last-admin guard look admins up by role.
    role: Mapped[str] = mapped_column(String(16), index=True)
    # An argon2id PHC string; its length grows with the parameters, so no fixed limit.
    password_hash: Mapped[str] = mapped_column(Text)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    request_key: Mapped[str | None] = mapped_column(String(REQUEST_KEY_MAX))
    request_hash: Mapped[str | None] = mapped_column(String(REQUEST_HASH_LENGTH))


class RegistrationRow(Base):
    """A registration from CreateUser, by the SHA-256 of the token its mail linked to (256
    random bits: a fast hash is safe, and only the hash is stored). ``password_hash`` is
    NULL when the address had an account and the mail was a notice: such a row makes
    nothing, and is kept only so that a repeat of the call answers the same way.
    ``user_id`` is the account the link made (a second click answers it). Rows go once
    ``expire_time`` has passed."""

    __tablename__ = "registrations"
    __table_args__ = (Index(REGISTRATION_REQUEST_KEY_INDEX, "request_key", unique=True),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    email_key: Mapped[str] = mapped_column(String(254))
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expire_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    user_id: Mapped[str | None] = mapped_column(String(32))
    request_key: Mapped[str | None] = mapped_column(String(REQUEST_KEY_MAX))
    request_hash: Mapped[str | None] = mapped_column(String(REQUEST_HASH_LENGTH))


class OwnedMovieRow(Base):
    """A movie in an account's library: filled from OrderPaid events, one row per account
    and movie (the first paid order that bought it). ``title_time`` is the movie's
    ``update_time`` the title is from, so a MovieChanged that arrives late changes nothing.
    ``id`` is time-ordered: the library lists newest first by it."""

    __tablename__ = "owned_movies"
    __table_args__ = (
        UniqueConstraint("user_id", "movie_id", name="uq_owned_movies_user_id_movie_id"),
        Index("ix_owned_movies_user_id_id", "user_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    movie_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    title_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    order_id: Mapped[str] = mapped_column(String(64))
    purchase_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SessionRow(Base):
    """A login session: what the refresh tokens of one login belong to, and what a
    logout or revocation ends (``revoke_time``)."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user_id_id", "user_id", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    refresh_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expire_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoke_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(String(32))


class RefreshTokenRow(Base):
    """Every refresh token a session was given, by the SHA-256 of the token (the token is
    256 random bits: a fast hash is safe, and only the hash is stored). ``use_time`` is
    set when it is exchanged; a second exchange finds it set and ends the session, unless
    it is a repeat of the same call: ``use_call`` is the gateway's id of the call that
    exchanged it, and ``parent_hash`` names the token a token replaced."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32), index=True)
    issue_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    use_time: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    use_call: Mapped[str | None] = mapped_column(String(CALL_ID_MAX))
    parent_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class LoginFailureRow(Base):
    """Failed logins per email (whether or not an account has it): the throttle's count."""

    __tablename__ = "login_failures"

    email_key: Mapped[str] = mapped_column(String(254), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class MailOutboxRow(Base):
    """A mail waiting to be handed to the mailer (services/user/mail_relay.py): stored in
    the transaction of the use case that sends it, deleted once the mailer took it.

    ``body`` holds a registration's link, a credential, until then: seconds, or as long as
    the mail server is away. ``due_time`` is when the next attempt may start; a relay that
    takes a row sets it a lease ahead (another replica takes the row over if that relay
    dies), and after a failed attempt a growing delay ahead. ``trace_context`` is the
    ``traceparent`` of the call that queued it, so its delivery joins that trace."""

    __tablename__ = "mail_outbox"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    trace_context: Mapped[str | None] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    due_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    attempts: Mapped[int] = mapped_column(Integer)


#: The outbox and inbox (services.common.events.tables), like every service's.
EVENTS = event_tables.define(Base.metadata)
#: The calls Envoy may repeat that this service carried out (services.common.handled_calls).
HANDLED_CALLS = handled_calls.define(Base.metadata)
