"""gRPC servicer of cinema.v1.MovieService: proto -> domain -> proto, nothing else.

Use cases are blocking (SQLAlchemy, peer calls) and run in the server's worker thread
that serves the call (services/common/server.py).
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from cinema.v1 import cast_pb2, money_pb2, movie_pb2, movie_pb2_grpc
from services.common.interceptors import current_request
from services.common.money import Money
from services.common.wire import populated_fields, timestamp
from services.movie.domain import CastMember, Movie, MovieFields, MovieView
from services.movie.service import MovieService

_VIEWS = {
    movie_pb2.MOVIE_VIEW_UNSPECIFIED: MovieView.BASIC,
    movie_pb2.MOVIE_VIEW_BASIC: MovieView.BASIC,
    movie_pb2.MOVIE_VIEW_FULL: MovieView.FULL,
}


def _cast_to_proto(member: CastMember) -> cast_pb2.Cast:
    message = cast_pb2.Cast(
        id=member.id,
        name=member.name,
        create_time=timestamp(member.create_time),
        update_time=timestamp(member.update_time),
    )
    if member.nationality is not None:
        message.nationality = member.nationality
    return message


def movie_to_proto(movie: Movie, cast_members: tuple[CastMember, ...] = ()) -> movie_pb2.Movie:
    return movie_pb2.Movie(
        id=movie.id,
        title=movie.title,
        plot=movie.plot,
        genres=movie.genres,
        cast_ids=movie.cast_ids,
        price=money_pb2.Money(
            currency_code=movie.price.currency_code, amount_minor=movie.price.amount_minor
        ),
        create_time=timestamp(movie.create_time),
        update_time=timestamp(movie.update_time),
        cast_members=[_cast_to_proto(c) for c in cast_members],
    )


def _fields(message: movie_pb2.Movie) -> MovieFields:
    price = (
        Money(message.price.currency_code, message.price.amount_minor)
        if message.HasField("price")
        else None
    )
    return MovieFields(
        title=message.title,
        plot=message.plot,
        genres=list(message.genres),
        cast_ids=list(message.cast_ids),
        price=price,
    )


class MovieServicer(movie_pb2_grpc.MovieServiceServicer):
    def __init__(self, service: MovieService) -> None:
        self._service = service

    def CreateMovie(
        self, request: movie_pb2.CreateMovieRequest, context: grpc.ServicerContext
    ) -> movie_pb2.Movie:
        movie = self._service.create_movie(
            _fields(request.movie), current_request(), request_id=request.request_id
        )
        return movie_to_proto(movie)

    def GetMovie(
        self, request: movie_pb2.GetMovieRequest, context: grpc.ServicerContext
    ) -> movie_pb2.Movie:
        view = _VIEWS.get(request.view, MovieView.BASIC)
        found = self._service.get_movie(request.id, view, current_request())
        return movie_to_proto(found.movie, found.cast_members)

    def ListMovies(
        self, request: movie_pb2.ListMoviesRequest, context: grpc.ServicerContext
    ) -> movie_pb2.ListMoviesResponse:
        page = self._service.list_movies(
            request.page_size,
            request.page_token,
            genre=request.genre,
            cast_id=request.cast_id,
        )
        return movie_pb2.ListMoviesResponse(
            movies=[movie_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )

    def UpdateMovie(
        self, request: movie_pb2.UpdateMovieRequest, context: grpc.ServicerContext
    ) -> movie_pb2.Movie:
        movie = self._service.update_movie(
            request.movie.id,
            _fields(request.movie),
            list(request.update_mask.paths),
            populated_fields(request.movie),
            current_request(),
        )
        return movie_to_proto(movie)

    def DeleteMovie(
        self, request: movie_pb2.DeleteMovieRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._service.delete_movie(request.id, current_request())
        return empty_pb2.Empty()

    def BatchGetMovies(
        self, request: movie_pb2.BatchGetMoviesRequest, context: grpc.ServicerContext
    ) -> movie_pb2.BatchGetMoviesResponse:
        movies = self._service.batch_get_movies(list(request.ids))
        return movie_pb2.BatchGetMoviesResponse(movies=[movie_to_proto(m) for m in movies])
