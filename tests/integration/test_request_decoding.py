"""A request whose bytes are not the RPC's message is INVALID_ARGUMENT, not INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from cinema.v1 import money_pb2, movie_pb2
from tests.integration.conftest import Catalogue
from tests.support.errors import call_error

METHODS = (
    "/cinema.v1.MovieService/GetMovie",
    "/cinema.v1.MovieService/CreateMovie",
    "/cinema.v1.CastService/BatchGetCasts",
)


@pytest.mark.parametrize("method", METHODS)
def test_undecodable_bytes_are_invalid_argument(catalogue: Catalogue, method: str) -> None:
    channel = catalogue.movie.channel() if "Movie" in method else catalogue.cast.channel()
    call = channel.unary_unary(
        method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
    )
    with pytest.raises(grpc.RpcError) as raised:
        call(b"\n\x02\xff\xfe", timeout=5, metadata=catalogue.admin)
    error = call_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "MALFORMED_REQUEST"
    assert "Error" not in error.message  # no exception class leaks
    assert error.violations == {"request": "is not a valid message of this RPC"}


def test_the_service_still_answers_after_a_bad_request(catalogue: Catalogue) -> None:
    with pytest.raises(grpc.RpcError):
        catalogue.movies.GetMovie(movie_pb2.GetMovieRequest(id=""), timeout=5)
    listing = catalogue.movies.ListMovies(movie_pb2.ListMoviesRequest(page_size=1), timeout=5)
    assert listing is not None


def test_nul_characters_are_invalid_argument_naming_the_field(catalogue: Catalogue) -> None:
    with pytest.raises(grpc.RpcError) as listing:
        catalogue.movies.ListMovies(movie_pb2.ListMoviesRequest(genre="a\x00b"), timeout=5)
    assert call_error(listing.value).violations == {"genre": "must not contain NUL characters"}
    with pytest.raises(grpc.RpcError) as created:
        catalogue.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(
                movie=movie_pb2.Movie(
                    title="Nul", cast_ids=["c\x00"], price=money_pb2.Money(currency_code="USD")
                )
            ),
            timeout=5,
            metadata=catalogue.admin,
        )
    error = call_error(created.value)
    # Refused before the cast peer is asked: not the 503 a peer failure would be.
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "movie.cast_ids[0]" in error.violations
