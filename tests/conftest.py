"""Fixtures shared by all tests. Integration tests run once per database backend:
SQLite (a file per service) and PostgreSQL (a fresh database per service, dropped after)."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Callable, Iterator

import pytest

from tests.support.nats import NatsServer
from tests.support.postgres import require_server
from tests.support.tokens import SigningKeys

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

DatabaseFactory = Callable[[str], str]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A NATS server of the test session's own, JetStream on (see tests/support/nats.py)."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer) -> SigningKeys:
    return SigningKeys.create(tmp_path_factory.mktemp("keys"), nats_url=nats_server.url)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def databases(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    """``databases(label)`` gives the URL of a new, empty database for one service."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            directory: pathlib.Path = tmp_path_factory.mktemp("sqlite")

            def make(label: str) -> str:
                return f"sqlite:///{directory / (label + '.db')}"

        else:
            server = require_server()

            def make(label: str) -> str:
                return stack.enter_context(server.fresh_database(label))

        yield make
