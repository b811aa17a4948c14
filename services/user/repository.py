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

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.common.context import Role
from services.common.db import CoreUnitOfWork, UnitOfWork, as_utc
from services.common.idempotency import DuplicateRequestKey, RequestRecord, is_unique_violation
from services.user.domain import EmailTaken, User, email_key
from services.user.models import EMAIL_KEY_CONSTRAINT, REQUEST_KEY_INDEX, Base, UserRow


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


class UserUnitOfWork(UnitOfWork, Protocol):
    """One transaction over the user tables."""

    @property
    def users(self) -> UserRepository: ...


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


class SqlAlchemyUserUnitOfWork(CoreUnitOfWork):
    """Every read-only use case of accounts is one statement, so reads run without a
    transaction (autocommit on PostgreSQL); writes are one transaction."""

    users: SqlAlchemyUserRepository

    def _bind(self, connection: Connection) -> None:
        self.users = SqlAlchemyUserRepository(connection)
