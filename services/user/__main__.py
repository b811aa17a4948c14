"""Composition root of the user service: settings -> engine, password hasher, token issuer
-> use cases -> first admin -> server.

``cinema serve user`` (or ``python -m services.user``) runs it. The user service is the
only one with the JWT private key (``CINEMA_JWT_PRIVATE_KEY_FILE`` or
``CINEMA_JWT_PRIVATE_KEY``); it must be the pair of the public key every service verifies
with (``CINEMA_JWT_PUBLIC_KEY_FILE``), which is checked here so that a mismatch stops the
process at start instead of making every token fail later.

Registration queues its mail in its own transaction; the mail relay hands it to the mailer
``CINEMA_MAIL_URL`` names (by default files in ``mail/`` of the data directory), with
links that start with ``CINEMA_PUBLIC_URL`` (by default the gateway's address): see
services/user/mail.py and services/user/mail_relay.py.

When ``CINEMA_ADMIN_EMAIL`` and ``CINEMA_ADMIN_PASSWORD`` are set and no admin exists,
the first admin is created here (see :meth:`UserService.ensure_first_admin`); with an
admin in place they are ignored, whatever they say.
"""

from __future__ import annotations

import functools

import grpc
from cryptography.hazmat.primitives import serialization

from cinema.v1 import user_pb2_grpc
from services.common import handled_calls, migrations
from services.common.auth import TokenIssuer, key_id
from services.common.db import EnginePools, make_engine, ping
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.events.bus import build_runtime
from services.common.events.store import EventLog
from services.common.server import ServiceSpec
from services.common.settings import Settings, SettingsError
from services.user import events
from services.user.mail import mailer_from_url
from services.user.mail_relay import MailOutbox, MailRelay
from services.user.models import EVENTS
from services.user.passwords import PasswordHasher
from services.user.repository import SqlAlchemyUserUnitOfWork
from services.user.service import UserService
from services.user.servicer import UserServicer

FULL_NAME = "cinema.v1.UserService"


def token_issuer(settings: Settings) -> TokenIssuer:
    """The access-token signer; SettingsError when the key is missing or not the pair of
    the public key. With a key ring, the ring's newest key (followed as it rotates)."""
    if settings.jwt_keys_dir is not None:
        from services.common.keyring import KeyRing

        try:
            return TokenIssuer.from_ring(
                KeyRing(settings.jwt_keys_dir),
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl_seconds=settings.access_token_ttl_seconds,
            )
        except RuntimeError as error:
            raise SettingsError(f"CINEMA_JWT_KEYS_DIR: {error}") from None
    if settings.jwt_private_key_pem is None or settings.jwt_public_key_pem is None:
        raise SettingsError("CINEMA_JWT_PRIVATE_KEY_FILE (or CINEMA_JWT_PRIVATE_KEY) is required")
    try:
        issuer = TokenIssuer(
            settings.jwt_private_key_pem,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
        )
        private = serialization.load_pem_private_key(settings.jwt_private_key_pem, password=None)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        paired = key_id(public_pem) == key_id(settings.jwt_public_key_pem)
    except ValueError as error:
        raise SettingsError(f"CINEMA_JWT_PRIVATE_KEY / CINEMA_JWT_PUBLIC_KEY: {error}") from None
    if not paired:
        raise SettingsError(
            "CINEMA_JWT_PRIVATE_KEY and CINEMA_JWT_PUBLIC_KEY are not a key pair: "
            "tokens signed with one would not verify with the other"
        )
    return issuer


def bootstrap_first_admin(service: UserService, settings: Settings) -> None:
    """Create the first admin from the settings when they name one and none exists."""
    if settings.admin_email is None or settings.admin_password is None:
        return
    try:
        service.ensure_first_admin(settings.admin_email, settings.admin_password)
    except InvalidArgument as error:
        raise SettingsError(
            "; ".join(f"{v.field} {v.description}" for v in error.violations)
        ) from None
    except FailedPrecondition as error:
        raise SettingsError(error.message) from None


def build(settings: Settings) -> ServiceSpec:
    """Wire the user service: migrate, build the use cases, make the first admin."""
    issuer = token_issuer(settings)
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessions = EnginePools(engine)
    log = EventLog(EVENTS, enabled=settings.events_enabled)
    uow = functools.partial(SqlAlchemyUserUnitOfWork, sessions, events=log)
    mail = MailRelay(
        MailOutbox(engine, sessions.single_statement_read),
        mailer_from_url(settings.mail_url, settings.mail_from),
    )
    try:
        migrations.upgrade(engine, "user")
        service = UserService(
            uow,
            # One check per four workers: argon2 never holds every thread, and one check
            # already keeps `parallelism` cores busy (4 by default; the machines have 2).
            # Measured under 40 guessing clients (tests/e2e/test_hardening.py): the slowest
            # GetUser 0.41 s with 2 at once, 0.31 s with 1, minutes with no limit.
            PasswordHasher(settings.argon2, max_concurrent=max(1, settings.worker_threads // 4)),
            issuer,
            session_ttl_seconds=settings.session_ttl_seconds,
            mail=mail,
            public_url=settings.public_url,
        )
        bootstrap_first_admin(service, settings)
    except BaseException:
        sessions.close()
        raise

    def register(server: grpc.Server) -> None:
        user_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(service), server)

    return ServiceSpec(
        full_name=FULL_NAME,
        register=register,
        database_ping=functools.partial(ping, engine),
        close=sessions.close,
        events=build_runtime(settings, log, sessions, events.consumer(uow, service)),
        handled_call=handled_calls.handled_by(uow),
        background=(mail,),
    )


if __name__ == "__main__":
    from services.cli import main

    main(["serve", "user"])
