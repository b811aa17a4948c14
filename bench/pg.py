"""Plain psycopg2 connections to a loopback PostgreSQL, for seeding and the query ceiling.

psycopg2 ships no type stubs and the benchmark uses four of its calls (connect, cursor,
execute, copy_expert), so the module is loaded as ``Any`` here, in one place.
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy.engine import make_url

from bench.target import check_database_url


def connect(database_url: str, *, autocommit: bool = False) -> Any:
    """A psycopg2 connection to the database of a SQLAlchemy URL on loopback."""
    psycopg2: Any = importlib.import_module("psycopg2")
    url = make_url(check_database_url(database_url))
    connection = psycopg2.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        dbname=url.database or "postgres",
    )
    connection.autocommit = autocommit
    return connection
