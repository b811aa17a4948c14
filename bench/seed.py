"""Seeding and cleaning the movie database of a benchmark run, straight into its tables.

Creating 100k movies through the API would take minutes (CreateMovie checks its cast ids
with the cast service, one call each), so the seeder writes the rows the movie service
itself would write (``movies`` plus the ``movie_genres`` and ``movie_casts`` link tables,
see ``services/movie/models.py``) with PostgreSQL ``COPY``, after the service has applied
its migrations. Ids are UUIDv7 from :func:`services.common.ids.new_id`, like the service's.
Only a fresh benchmark database is ever seeded this way.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from bench import catalogue, pg
from services.common.ids import new_id

_MOVIE_COLUMNS = (
    "id",
    "title",
    "plot",
    "genres",
    "cast_ids",
    "price_currency",
    "price_amount_minor",
    "create_time",
    "update_time",
)
#: Seeded movies are created at this time; anything later was made by a scenario.
SEED_TIME = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def _copy(cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    # Text format: tab-separated, backslash escapes; none of the values holds a tab,
    # newline or backslash, which _check_plain makes sure of.
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(row))
        buffer.write("\n")
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)


def _check_plain(*values: str) -> None:
    for value in values:
        if any(c in value for c in "\t\n\\"):
            raise ValueError(f"seed value {value!r} would need COPY escaping")


def seed_movies(
    database_url: str, count: int, cast_ids: Sequence[str], *, first_number: int = 0
) -> list[str]:
    """Insert ``count`` benchmark movies naming ``cast_ids``; answer their ids."""
    ids = [new_id() for _ in range(count)]
    stamp = SEED_TIME.isoformat()
    genres_json = json.dumps(list(catalogue.GENRES))
    casts_json = json.dumps(list(cast_ids))
    _check_plain(catalogue.PLOT, genres_json, casts_json, *cast_ids)
    connection = pg.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            _copy(
                cursor,
                "movies",
                _MOVIE_COLUMNS,
                (
                    (
                        movie_id,
                        catalogue.title(first_number + n),
                        catalogue.PLOT,
                        genres_json,
                        casts_json,
                        catalogue.PRICE_CURRENCY,
                        str(catalogue.PRICE_MINOR),
                        stamp,
                        stamp,
                    )
                    for n, movie_id in enumerate(ids)
                ),
            )
            _copy(
                cursor,
                "movie_genres",
                ("movie_id", "genre"),
                ((m, g) for m in ids for g in catalogue.GENRES),
            )
            _copy(
                cursor,
                "movie_casts",
                ("movie_id", "cast_id"),
                ((m, c) for m in ids for c in cast_ids),
            )
        with connection, connection.cursor() as cursor:
            # Fresh statistics, as a long-running database would have.
            cursor.execute("ANALYZE movies")
            cursor.execute("ANALYZE movie_genres")
            cursor.execute("ANALYZE movie_casts")
    finally:
        connection.close()
    return ids


def delete_unseeded_movies(database_url: str) -> int:
    """Remove the movies a scenario created (newer than :data:`SEED_TIME`); answer how many."""
    connection = pg.connect(database_url)
    try:
        with connection, connection.cursor() as cursor:
            for link in ("movie_genres", "movie_casts"):
                cursor.execute(
                    f"DELETE FROM {link} WHERE movie_id IN "  # noqa: S608 - fixed table names
                    "(SELECT id FROM movies WHERE create_time > %s)",
                    (SEED_TIME,),
                )
            cursor.execute("DELETE FROM movies WHERE create_time > %s", (SEED_TIME,))
            deleted = int(cursor.rowcount)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE movies")
    finally:
        connection.close()
    return deleted


def count_movies(database_url: str) -> int:
    """How many movies the database holds."""
    connection = pg.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM movies")
            row = cursor.fetchone()
            return int(row[0]) if row else 0
    finally:
        connection.close()
