"""Persistence of accounts: the repository protocol and its SQLAlchemy implementation.

Core statements on one connection (:class:`~services.common.db.CoreUnitOfWork`), executed
at once, so a duplicate email surfaces inside :meth:`SqlAlchemyUserRepository.add` or
``save`` as :class:`~services.user.domain.EmailTaken`, and a duplicate request key inside
``add`` as :class:`~services.common.idempotency.DuplicateRequestKey`, where the use case
can still react to them. The statements of hot paths (GetUser, which every CreateOrder
makes, and Login) are built once at module level. Accounts are read without their
``request_key`` and ``request_hash``: only CreateUser's idempotency check needs them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.common.clock import as_utc
from services.common.context import Role
from services.common.db import CoreUnitOfWork, UnitOfWork
from services.common.idempotency import DuplicateRequestKey, RequestRecord, is_unique_violation
from services.common.ids import new_id
from services.user.domain import (
    EmailTaken,
    OwnedMovie,
    PaidMovie,
    RefreshUse,
    Registration,
    Session,
    User,
    email_key,
)
from services.user.mail import Mail
from services.user.models import (
    EMAIL_KEY_CONSTRAINT,
    REGISTRATION_REQUEST_KEY_INDEX,
    REQUEST_KEY_INDEX,
    Base,
    LoginFailureRow,
    MailOutboxRow,
    OwnedMovieRow,
    RefreshTokenRow,
    RegistrationRow,
    SessionRow,
    UserRow,
)


class UserRepository(Protocol):
    def add(self, user: User, request: RequestRecord | None = None) -> None:
        """Store a new account, with the key and fingerprint of the create that made it;
        :class:`EmailTaken` when its email is in use, :class:`DuplicateRequestKey` when
        another account has that key (a duplicate of both may be reported as either)."""
        ...

    def find_by_request_key(self, key: str) -> tuple[User, str] | None:
        """The account stored with the request key ``key`` and its request's fingerprint."""
        ...

    def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        """The account, locked until the transaction ends when ``for_update``."""
        ...

    def get_by_email(self, key: str) -> User | None:
        """The account whose :func:`email_key` is ``key``."""
        ...

    def list_page(self, after_id: str | None, limit: int) -> list[User]: ...

    def save(self, user: User) -> None:
        """Write every field of ``user``; :class:`EmailTaken` when its email is in use."""
        ...

    def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Swap the hash only if it is still ``old_hash``; whether it was swapped."""
        ...

    def delete(self, user_id: str) -> bool: ...

    def admin_exists(self) -> bool: ...

    def lock_admin_ids(self) -> list[str]:
        """Ids of every admin, locked until the transaction ends."""
        ...


class LibraryRepository(Protocol):
    """The movies each account has paid for."""

    def add_purchase(
        self,
        user_id: str,
        order_id: str,
        movies: Sequence[PaidMovie],
        paid: dt.datetime,
        titles_as_of: dt.datetime,
    ) -> None:
        """Add the movies of a paid order to the library; a movie already there keeps
        the order that bought it first."""
        ...

    def rename(self, movie_id: str, title: str, as_of: dt.datetime) -> None:
        """Give ``movie_id`` the title it has as of ``as_of`` in every library, unless a
        newer title is there already."""
        ...

    def list_page(self, user_id: str, before_id: str | None, limit: int) -> list[OwnedMovie]:
        """Up to ``limit`` of the account's movies with entry ids below ``before_id``, newest
        first."""
        ...

    def forget_user(self, user_id: str) -> None:
        """Delete the account's library (with the account)."""
        ...


class SessionRepository(Protocol):
    """Login sessions and their refresh tokens (by hash)."""

    def add(self, session: Session) -> None: ...
    def get(self, session_id: str, *, for_update: bool = False) -> Session | None: ...
    def live_of_user(self, user_id: str, now: dt.datetime) -> list[Session]:
        """The account's sessions not revoked and not expired, newest first."""
        ...

    def list_live(
        self, user_id: str, before_id: str | None, limit: int, now: dt.datetime
    ) -> list[Session]: ...
    def revoke(self, session_id: str, now: dt.datetime, reason: str) -> bool:
        """End a live session; False when it had ended already."""
        ...

    def touch(self, session_id: str, now: dt.datetime) -> None:
        """Record a refresh of the session."""
        ...

    def add_refresh_token(
        self, token_hash: str, session_id: str, now: dt.datetime, parent_hash: str | None = None
    ) -> None:
        """Issue a token; ``parent_hash`` is the token it is given in exchange for."""
        ...

    def use_refresh_token(
        self, token_hash: str, now: dt.datetime, call_id: str | None
    ) -> tuple[str, RefreshUse] | None:
        """Mark the token used by the call ``call_id`` (the gateway's id, None without
        one): its session id and what the exchange found (None when no such token was ever
        issued). Locks the token's row."""
        ...

    def retire_unused_child(self, parent_hash: str, now: dt.datetime) -> bool:
        """Spend the token issued in exchange for ``parent_hash``, when it was never used;
        False when it was (its holder got it, so the exchange's answer was not lost)."""
        ...


class LoginFailureRepository(Protocol):
    def get(self, email_key: str) -> tuple[int, dt.datetime] | None:
        """Failures and the time of the last one, for ``email_key``."""
        ...

    def record(self, email_key: str, failures: int, now: dt.datetime) -> None: ...
    def clear(self, email_key: str) -> None: ...


class RegistrationRepository(Protocol):
    """Registrations waiting for their mailed link, by the hash of its token."""

    def add(self, registration: Registration, request: RequestRecord | None = None) -> None:
        """Store a registration with the key and fingerprint of the create that made it;
        :class:`DuplicateRequestKey` when another registration has that key."""
        ...

    def find_by_request_key(self, key: str) -> tuple[Registration, str] | None:
        """The registration stored with the request key ``key`` and its fingerprint."""
        ...

    def get(self, token_hash: str, *, for_update: bool = False) -> Registration | None:
        """The registration, locked until the transaction ends when ``for_update``."""
        ...

    def made(self, token_hash: str, user_id: str) -> None:
        """Record that the registration's link made the account ``user_id``."""
        ...

    def delete_expired(self, now: dt.datetime) -> int:
        """Delete the registrations whose link expired before ``now``; how many."""
        ...


class MailQueue(Protocol):
    def add(self, mail: Mail, now: dt.datetime, trace_context: str | None = None) -> None:
        """Queue ``mail`` for the mail relay, in this transaction: it leaves only if the
        transaction commits (services/user/mail_relay.py)."""
        ...


class UserUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the user tables."""

    @property
    def users(self) -> UserRepository: ...
    @property
    def library(self) -> LibraryRepository: ...
    @property
    def sessions(self) -> SessionRepository: ...
    @property
    def login_failures(self) -> LoginFailureRepository: ...
    @property
    def registrations(self) -> RegistrationRepository: ...
    @property
    def mail(self) -> MailQueue: ...


_users = Base.metadata.tables[UserRow.__tablename__]
# What a User is made of, in table order (see _to_domain): every column but the two that
# only the idempotency check reads.
_USER_COLUMNS = [c for c in _users.c if c.name not in ("request_key", "request_hash")]

_GET = select(*_USER_COLUMNS).where(_users.c.id == bindparam("user_id"))
_GET_FOR_UPDATE = _GET.with_for_update()
_GET_BY_EMAIL = select(*_USER_COLUMNS).where(_users.c.email_key == bindparam("email_key"))
# CreateUser's idempotency check: the account stored with a key, its fingerprint last.
_FIND_BY_REQUEST_KEY = select(*_USER_COLUMNS, _users.c.request_hash).where(
    _users.c.request_key == bindparam("request_key")
)
_INSERT = insert(_users)
_ADMIN_EXISTS = select(exists().where(_users.c.role == Role.ADMIN.value))
# FOR UPDATE on PostgreSQL (SQLite's write transactions are serial already): two admins
# demoting or deleting each other at once queue here, and the second one re-reads the
# rows after the first commits, so it sees that only one is left. Ordered by id so that
# every transaction takes the locks in the same order.
_LOCK_ADMIN_IDS = (
    select(_users.c.id)
    .where(_users.c.role == Role.ADMIN.value)
    .order_by(_users.c.id)
    .with_for_update()
)


def _to_domain(row: Sequence[Any]) -> User:
    """An account from a row of ``_USER_COLUMNS``."""
    user_id, email, _email_key, display_name, role, password_hash, created, updated = row
    return User(
        id=user_id,
        email=email,
        display_name=display_name,
        role=Role(role),
        password_hash=password_hash,
        create_time=as_utc(created),
        update_time=as_utc(updated),
    )


def _constraint_error(error: IntegrityError) -> Exception:
    """What a failed constraint means, without the driver's message.

    Raised ``from None``: the driver's message lists the statement's parameters, the
    password hash among them, and a chained exception may end up in a log.
    """
    if is_unique_violation(error, constraint=EMAIL_KEY_CONSTRAINT, column="users.email_key"):
        return EmailTaken()
    if is_unique_violation(error, constraint=REQUEST_KEY_INDEX, column="users.request_key"):
        return DuplicateRequestKey("users.request_key")
    return RuntimeError(f"a users constraint failed ({type(error.orig).__name__})")


def _columns(user: User) -> dict[str, Any]:
    return {
        "email": user.email,
        "email_key": email_key(user.email),
        "display_name": user.display_name,
        "role": user.role.value,
        "password_hash": user.password_hash,
        "update_time": user.update_time,
    }


class SqlAlchemyUserRepository:
    """Core statements: one SELECT per read, no identity map."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, user: User, request: RequestRecord | None = None) -> None:
        try:
            self._connection.execute(
                _INSERT,
                {
                    "id": user.id,
                    "create_time": user.create_time,
                    "request_key": request.key.stored if request else None,
                    "request_hash": request.request_hash if request else None,
                    **_columns(user),
                },
            )
        except IntegrityError as error:
            raise _constraint_error(error) from None

    def find_by_request_key(self, key: str) -> tuple[User, str] | None:
        row = self._connection.execute(_FIND_BY_REQUEST_KEY, {"request_key": key}).first()
        return (_to_domain(row[:-1]), row[-1]) if row else None

    def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        query = _GET_FOR_UPDATE if for_update else _GET
        row = self._connection.execute(query, {"user_id": user_id}).first()
        return _to_domain(row) if row else None

    def get_by_email(self, key: str) -> User | None:
        row = self._connection.execute(_GET_BY_EMAIL, {"email_key": key}).first()
        return _to_domain(row) if row else None

    def list_page(self, after_id: str | None, limit: int) -> list[User]:
        query = select(*_USER_COLUMNS).order_by(_users.c.id).limit(limit)
        if after_id is not None:
            query = query.where(_users.c.id > after_id)
        return [_to_domain(r) for r in self._connection.execute(query)]

    def save(self, user: User) -> None:
        try:
            self._connection.execute(
                update(_users).where(_users.c.id == user.id).values(**_columns(user))
            )
        except IntegrityError as error:
            raise _constraint_error(error) from None

    def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        result = self._connection.execute(
            update(_users)
            .where(_users.c.id == user_id, _users.c.password_hash == old_hash)
            .values(password_hash=new_hash)
        )
        return bool(result.rowcount)

    def delete(self, user_id: str) -> bool:
        result = self._connection.execute(delete(_users).where(_users.c.id == user_id))
        return bool(result.rowcount)

    def admin_exists(self) -> bool:
        return bool(self._connection.execute(_ADMIN_EXISTS).scalar())

    def lock_admin_ids(self) -> list[str]:
        return list(self._connection.scalars(_LOCK_ADMIN_IDS))


_owned = Base.metadata.tables[OwnedMovieRow.__tablename__]


class SqlAlchemyLibraryRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add_purchase(
        self,
        user_id: str,
        order_id: str,
        movies: Sequence[PaidMovie],
        paid: dt.datetime,
        titles_as_of: dt.datetime,
    ) -> None:
        wanted = {movie.movie_id: movie for movie in movies}
        owned = set(
            self._connection.scalars(
                select(_owned.c.movie_id).where(
                    _owned.c.user_id == user_id, _owned.c.movie_id.in_(list(wanted))
                )
            )
        )
        new = [movie for movie_id, movie in wanted.items() if movie_id not in owned]
        if new:
            self._connection.execute(
                insert(_owned),
                [
                    {
                        "id": new_id(),
                        "user_id": user_id,
                        "movie_id": movie.movie_id,
                        "title": movie.title,
                        "title_time": titles_as_of,
                        "order_id": order_id,
                        "purchase_time": paid,
                    }
                    for movie in new
                ],
            )

    def rename(self, movie_id: str, title: str, as_of: dt.datetime) -> None:
        self._connection.execute(
            update(_owned)
            .where(_owned.c.movie_id == movie_id, _owned.c.title_time < as_of)
            .values(title=title, title_time=as_of)
        )

    def list_page(self, user_id: str, before_id: str | None, limit: int) -> list[OwnedMovie]:
        query = (
            select(_owned.c.id, _owned.c.movie_id, _owned.c.title, _owned.c.order_id,
                   _owned.c.purchase_time)
            .where(_owned.c.user_id == user_id)
            .order_by(_owned.c.id.desc())
            .limit(limit)
        )  # fmt: skip
        if before_id is not None:
            query = query.where(_owned.c.id < before_id)
        return [
            OwnedMovie(entry_id, movie_id, title, order_id, as_utc(purchased))
            for entry_id, movie_id, title, order_id, purchased in self._connection.execute(query)
        ]

    def forget_user(self, user_id: str) -> None:
        self._connection.execute(delete(_owned).where(_owned.c.user_id == user_id))


_sessions = Base.metadata.tables[SessionRow.__tablename__]
_refresh_tokens = Base.metadata.tables[RefreshTokenRow.__tablename__]
_login_failures = Base.metadata.tables[LoginFailureRow.__tablename__]
_SESSION_COLUMNS = [
    _sessions.c.id,
    _sessions.c.user_id,
    _sessions.c.create_time,
    _sessions.c.refresh_time,
    _sessions.c.expire_time,
    _sessions.c.revoke_time,
]


def _session(row: Sequence[Any]) -> Session:
    session_id, user_id, created, refreshed, expires, revoked = row
    return Session(
        session_id,
        user_id,
        as_utc(created),
        as_utc(refreshed),
        as_utc(expires),
        as_utc(revoked) if revoked is not None else None,
    )


class SqlAlchemySessionRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, session: Session) -> None:
        self._connection.execute(
            insert(_sessions),
            {
                "id": session.id,
                "user_id": session.user_id,
                "create_time": session.create_time,
                "refresh_time": session.refresh_time,
                "expire_time": session.expire_time,
            },
        )

    def get(self, session_id: str, *, for_update: bool = False) -> Session | None:
        query = select(*_SESSION_COLUMNS).where(_sessions.c.id == session_id)
        if for_update:
            query = query.with_for_update()
        row = self._connection.execute(query).first()
        return _session(row) if row else None

    def _live(self, user_id: str, now: dt.datetime) -> Any:
        return (
            select(*_SESSION_COLUMNS)
            .where(
                _sessions.c.user_id == user_id,
                _sessions.c.revoke_time.is_(None),
                _sessions.c.expire_time > now,
            )
            .order_by(_sessions.c.id.desc())
        )

    def live_of_user(self, user_id: str, now: dt.datetime) -> list[Session]:
        return [_session(row) for row in self._connection.execute(self._live(user_id, now))]

    def list_live(
        self, user_id: str, before_id: str | None, limit: int, now: dt.datetime
    ) -> list[Session]:
        query = self._live(user_id, now).limit(limit)
        if before_id is not None:
            query = query.where(_sessions.c.id < before_id)
        return [_session(row) for row in self._connection.execute(query)]

    def revoke(self, session_id: str, now: dt.datetime, reason: str) -> bool:
        result = self._connection.execute(
            update(_sessions)
            .where(_sessions.c.id == session_id, _sessions.c.revoke_time.is_(None))
            .values(revoke_time=now, revoke_reason=reason)
        )
        return bool(result.rowcount)

    def touch(self, session_id: str, now: dt.datetime) -> None:
        self._connection.execute(
            update(_sessions).where(_sessions.c.id == session_id).values(refresh_time=now)
        )

    def add_refresh_token(
        self, token_hash: str, session_id: str, now: dt.datetime, parent_hash: str | None = None
    ) -> None:
        self._connection.execute(
            insert(_refresh_tokens),
            {
                "token_hash": token_hash,
                "session_id": session_id,
                "issue_time": now,
                "parent_hash": parent_hash,
            },
        )

    def use_refresh_token(
        self, token_hash: str, now: dt.datetime, call_id: str | None
    ) -> tuple[str, RefreshUse] | None:
        row = self._connection.execute(
            select(
                _refresh_tokens.c.session_id,
                _refresh_tokens.c.use_time,
                _refresh_tokens.c.use_call,
            )
            .where(_refresh_tokens.c.token_hash == token_hash)
            .with_for_update()
        ).first()
        if row is None:
            return None
        session_id, used, use_call = row
        if used is None:
            self._connection.execute(
                update(_refresh_tokens)
                .where(_refresh_tokens.c.token_hash == token_hash)
                .values(use_time=now, use_call=call_id)
            )
            return str(session_id), RefreshUse.FIRST
        if call_id is not None and use_call == call_id:
            return str(session_id), RefreshUse.REPEAT
        return str(session_id), RefreshUse.REUSED

    def retire_unused_child(self, parent_hash: str, now: dt.datetime) -> bool:
        result = self._connection.execute(
            update(_refresh_tokens)
            .where(
                _refresh_tokens.c.parent_hash == parent_hash,
                _refresh_tokens.c.use_time.is_(None),
            )
            .values(use_time=now)
        )
        return bool(result.rowcount)


class SqlAlchemyLoginFailureRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get(self, email_key: str) -> tuple[int, dt.datetime] | None:
        row = self._connection.execute(
            select(_login_failures.c.failures, _login_failures.c.last_failure_time).where(
                _login_failures.c.email_key == email_key
            )
        ).first()
        return (int(row[0]), as_utc(row[1])) if row else None

    def record(self, email_key: str, failures: int, now: dt.datetime) -> None:
        updated = self._connection.execute(
            update(_login_failures)
            .where(_login_failures.c.email_key == email_key)
            .values(failures=failures, last_failure_time=now)
        )
        if not updated.rowcount:
            try:
                with self._connection.begin_nested():
                    self._connection.execute(
                        insert(_login_failures),
                        {"email_key": email_key, "failures": failures, "last_failure_time": now},
                    )
            except IntegrityError:  # another replica counted this email first: count on
                self._connection.execute(
                    update(_login_failures)
                    .where(_login_failures.c.email_key == email_key)
                    .values(failures=_login_failures.c.failures + 1, last_failure_time=now)
                )

    def clear(self, email_key: str) -> None:
        self._connection.execute(
            delete(_login_failures).where(_login_failures.c.email_key == email_key)
        )


_registrations = Base.metadata.tables[RegistrationRow.__tablename__]
# A Registration is made of these, in this order (see _registration).
_REGISTRATION_COLUMNS = [
    _registrations.c[name]
    for name in (
        "token_hash",
        "email",
        "display_name",
        "password_hash",
        "create_time",
        "expire_time",
        "user_id",
    )
]


def _registration(row: Sequence[Any]) -> Registration:
    token_hash, email, display_name, password_hash, created, expires, user_id = row
    return Registration(
        token_hash=token_hash,
        email=email,
        display_name=display_name,
        password_hash=password_hash,
        create_time=as_utc(created),
        expire_time=as_utc(expires),
        user_id=user_id,
    )


class SqlAlchemyRegistrationRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, registration: Registration, request: RequestRecord | None = None) -> None:
        try:
            self._connection.execute(
                insert(_registrations),
                {
                    "token_hash": registration.token_hash,
                    "email": registration.email,
                    "email_key": email_key(registration.email),
                    "display_name": registration.display_name,
                    "password_hash": registration.password_hash,
                    "create_time": registration.create_time,
                    "expire_time": registration.expire_time,
                    "user_id": registration.user_id,
                    "request_key": request.key.stored if request else None,
                    "request_hash": request.request_hash if request else None,
                },
            )
        except IntegrityError as error:
            # Raised from None: the driver's message lists the parameters, the hash among them.
            if is_unique_violation(
                error,
                constraint=REGISTRATION_REQUEST_KEY_INDEX,
                column="registrations.request_key",
            ):
                raise DuplicateRequestKey("registrations.request_key") from None
            raise RuntimeError(
                f"a registrations constraint failed ({type(error.orig).__name__})"
            ) from None

    def find_by_request_key(self, key: str) -> tuple[Registration, str] | None:
        row = self._connection.execute(
            select(*_REGISTRATION_COLUMNS, _registrations.c.request_hash).where(
                _registrations.c.request_key == key
            )
        ).first()
        return (_registration(row[:-1]), row[-1]) if row else None

    def get(self, token_hash: str, *, for_update: bool = False) -> Registration | None:
        query = select(*_REGISTRATION_COLUMNS).where(_registrations.c.token_hash == token_hash)
        if for_update:
            query = query.with_for_update()
        row = self._connection.execute(query).first()
        return _registration(row) if row else None

    def made(self, token_hash: str, user_id: str) -> None:
        self._connection.execute(
            update(_registrations)
            .where(_registrations.c.token_hash == token_hash)
            .values(user_id=user_id)
        )

    def delete_expired(self, now: dt.datetime) -> int:
        result = self._connection.execute(
            delete(_registrations).where(_registrations.c.expire_time < now)
        )
        return int(result.rowcount)


_mail_outbox = Base.metadata.tables[MailOutboxRow.__tablename__]


class SqlAlchemyMailQueue:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, mail: Mail, now: dt.datetime, trace_context: str | None = None) -> None:
        self._connection.execute(
            insert(_mail_outbox),
            {
                "id": new_id(),
                "recipient": mail.to,
                "subject": mail.subject,
                "body": mail.text,
                "trace_context": trace_context,
                "create_time": now,
                "due_time": now,
                "attempts": 0,
            },
        )


class SqlAlchemyUserUnitOfWork(CoreUnitOfWork):
    """Every read-only use case of accounts is one statement, so reads run without a
    transaction (autocommit on PostgreSQL); writes are one transaction."""

    users: SqlAlchemyUserRepository
    library: SqlAlchemyLibraryRepository
    sessions: SqlAlchemySessionRepository
    login_failures: SqlAlchemyLoginFailureRepository
    registrations: SqlAlchemyRegistrationRepository
    mail: SqlAlchemyMailQueue

    def _bind(self, connection: Connection) -> None:
        self.users = SqlAlchemyUserRepository(connection)
        self.library = SqlAlchemyLibraryRepository(connection)
        self.sessions = SqlAlchemySessionRepository(connection)
        self.login_failures = SqlAlchemyLoginFailureRepository(connection)
        self.registrations = SqlAlchemyRegistrationRepository(connection)
        self.mail = SqlAlchemyMailQueue(connection)
