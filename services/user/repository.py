"""Persistence of accounts: the repository protocol and its SQLAlchemy implementation.

Writes are Core statements executed at once (not ORM objects flushed at commit), so a
duplicate email surfaces inside :meth:`SqlAlchemyUserRepository.add` or ``save`` as
:class:`~services.user.domain.EmailTaken`, where the use case can still react to it.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.context import Role
from services.common.db import SessionFactories, SqlAlchemyUnitOfWork, UnitOfWork, as_utc
from services.user.domain import EmailTaken, User, email_key
from services.user.models import Base, UserRow


class UserRepository(Protocol):
    def add(self, user: User) -> None:
        """Store a new account; :class:`EmailTaken` when its email is in use."""
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


def _to_domain(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        role=Role(row.role),
        password_hash=row.password_hash,
        create_time=as_utc(row.create_time),
        update_time=as_utc(row.update_time),
    )


def _constraint_error(error: IntegrityError) -> Exception:
    """What a failed constraint means, without the driver's message.

    Raised ``from None``: the driver's message lists the statement's parameters, the
    password hash among them, and a chained exception may end up in a log.
    """
    # PostgreSQL names the constraint, SQLite the column; both mention "email_key".
    if "email_key" in str(error.orig):
        return EmailTaken()
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

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, user: User) -> None:
        try:
            self._session.execute(
                insert(_users).values(id=user.id, create_time=user.create_time, **_columns(user))
            )
        except IntegrityError as error:
            raise _constraint_error(error) from None

    def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        query = select(_users).where(_users.c.id == user_id)
        if for_update:
            query = query.with_for_update()
        row = self._session.execute(query).first()
        return _to_domain(row) if row else None

    def get_by_email(self, key: str) -> User | None:
        row = self._session.execute(select(_users).where(_users.c.email_key == key)).first()
        return _to_domain(row) if row else None

    def list_page(self, after_id: str | None, limit: int) -> list[User]:
        query = select(_users).order_by(_users.c.id).limit(limit)
        if after_id is not None:
            query = query.where(_users.c.id > after_id)
        return [_to_domain(r) for r in self._session.execute(query)]

    def save(self, user: User) -> None:
        try:
            self._session.execute(
                update(_users).where(_users.c.id == user.id).values(**_columns(user))
            )
        except IntegrityError as error:
            raise _constraint_error(error) from None

    def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        result = self._session.execute(
            update(_users)
            .where(_users.c.id == user_id, _users.c.password_hash == old_hash)
            .values(password_hash=new_hash)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def delete(self, user_id: str) -> bool:
        result = self._session.execute(delete(_users).where(_users.c.id == user_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def admin_exists(self) -> bool:
        query = select(exists().where(_users.c.role == Role.ADMIN.value))
        return bool(self._session.execute(query).scalar())

    def lock_admin_ids(self) -> list[str]:
        # FOR UPDATE on PostgreSQL (SQLite's write transactions are serial already): two
        # admins demoting or deleting each other at once queue here, and the second one
        # re-reads the rows after the first commits, so it sees that only one is left.
        # Ordered by id so that every transaction takes the locks in the same order.
        query = (
            select(_users.c.id)
            .where(_users.c.role == Role.ADMIN.value)
            .order_by(_users.c.id)
            .with_for_update()
        )
        return list(self._session.scalars(query))


class SqlAlchemyUserUnitOfWork(SqlAlchemyUnitOfWork):
    users: SqlAlchemyUserRepository

    def __init__(self, sessions: SessionFactories, *, read_only: bool = False) -> None:
        super().__init__(sessions, read_only=read_only)

    def _bind(self, session: Session) -> None:
        self.users = SqlAlchemyUserRepository(session)
