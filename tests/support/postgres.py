"""A real PostgreSQL for the tests, with a fresh database per use, dropped afterwards.

The server is ``CINEMA_TEST_POSTGRES`` (``user@host:port``, default
``postgres@127.0.0.1:5432``, which every project machine and CI runs). When it does not
answer, the PostgreSQL tests fail under CI (``CI`` set) and are skipped elsewhere, with
the reason. Databases are created and dropped by pytest-postgresql's janitor.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pytest_postgresql.janitor import DatabaseJanitor


@dataclass(frozen=True)
class PostgresServer:
    user: str
    host: str
    port: int
    password: str | None = None

    @classmethod
    def from_env(cls) -> PostgresServer:
        spec = os.environ.get("CINEMA_TEST_POSTGRES", "postgres@127.0.0.1:5432")
        user, _, address = spec.rpartition("@")
        host, _, port = address.rpartition(":")
        password = os.environ.get("CINEMA_TEST_POSTGRES_PASSWORD")
        return cls(user=user or "postgres", host=host, port=int(port), password=password)

    def reachable(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2):
                return True
        except OSError:
            return False

    def url(self, dbname: str) -> str:
        auth = self.user if self.password is None else f"{self.user}:{self.password}"
        return f"postgresql+psycopg2://{auth}@{self.host}:{self.port}/{dbname}"

    @contextlib.contextmanager
    def fresh_database(self, label: str) -> Iterator[str]:
        """A new empty database (its SQLAlchemy URL), dropped on exit."""
        dbname = f"cinema_test_{label}_{uuid.uuid4().hex[:10]}"
        janitor = DatabaseJanitor(
            user=self.user,
            host=self.host,
            port=self.port,
            dbname=dbname,
            password=self.password,
        )
        with janitor:
            yield self.url(dbname)


def require_server() -> PostgresServer:
    server = PostgresServer.from_env()
    if not server.reachable():
        message = (
            f"no PostgreSQL at {server.host}:{server.port} "
            "(set CINEMA_TEST_POSTGRES=user@host:port)"
        )
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the PostgreSQL tests")
        pytest.skip(message)
    return server
