"""Alembic migrations, one history per service, applied at start by ``cinema serve``
(and ``cinema migrate SERVICE``).

Replicas of a service start together and must not race: on PostgreSQL the upgrade runs
under an advisory lock, on SQLite under an exclusive lock on a file beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import logging
import pathlib
from collections.abc import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData, text
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)


def script_location(service: str) -> pathlib.Path:
    package = importlib.import_module(f"services.{service}")
    return pathlib.Path(next(iter(package.__path__))) / "migrations"


def alembic_config(service: str, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location(service)))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _migration_lock(engine: Engine, connection: Connection, service: str) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"cinema:{service}".encode()).digest()[:4], "big")
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
        return
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade(engine: Engine, service: str) -> None:
    """Bring the service's schema to the newest revision."""
    with engine.connect() as connection, _migration_lock(engine, connection, service):
        command.upgrade(alembic_config(service, connection), "head")
        connection.commit()
    logger.info("%s schema is at the newest revision", service)


def run_env(target_metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py`` (online mode only)."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `cinema migrate SERVICE`")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
