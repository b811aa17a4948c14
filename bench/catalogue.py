"""What benchmark movies look like, shared by the seeder, the scenarios and the stub.

Every benchmark movie has the same shape (a title, a plot of about 200 characters, two
genres, three cast ids, a price), so the canned answer of the echo stub is the same size
as a real GetMovie answer and the stub ceiling compares like with like.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from cinema.v1 import money_pb2, movie_pb2

PLOT = (
    "A projectionist discovers that every film in the old cinema changes a little each "
    "night, and that the audience remembers the versions nobody else has seen; she sets "
    "out to find who edits them."
)
GENRES = ("drama", "mystery")
PRICE_CURRENCY = "USD"
PRICE_MINOR = 999


def title(number: int) -> str:
    """The title of benchmark movie ``number``."""
    return f"Benchmark movie {number:06d}"


def json_movie(number: int, cast_ids: tuple[str, ...]) -> dict[str, object]:
    """A movie as the JSON body of ``POST /api/v1/movies``."""
    return {
        "title": title(number),
        "plot": PLOT,
        "genres": list(GENRES),
        "castIds": list(cast_ids),
        "price": {"currencyCode": PRICE_CURRENCY, "amountMinor": PRICE_MINOR},
    }


def canned_movie(movie_id: str, cast_ids: tuple[str, ...]) -> movie_pb2.Movie:
    """A stored-looking movie message (what GetMovie answers for a seeded movie)."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(dt.datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC))
    return movie_pb2.Movie(
        id=movie_id,
        title=title(1),
        plot=PLOT,
        genres=GENRES,
        cast_ids=cast_ids,
        price=money_pb2.Money(currency_code=PRICE_CURRENCY, amount_minor=PRICE_MINOR),
        create_time=stamp,
        update_time=stamp,
    )
