"""The movie service as the order service sees it: titles and prices, in ONE call."""

from __future__ import annotations

from collections.abc import Sequence

from cinema.v1 import movie_pb2, movie_pb2_grpc
from services.common.context import RequestContext
from services.common.money import Money
from services.common.peers import PeerChannel
from services.order.domain import CatalogueMovie


class GrpcMovieCatalogue:
    """:class:`~services.order.service.MovieCatalogue` over gRPC (BatchGetMovies)."""

    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer
        self._stub = movie_pb2_grpc.MovieServiceStub(peer.channel)

    def get_many(self, movie_ids: Sequence[str], context: RequestContext) -> list[CatalogueMovie]:
        """The movies that exist among ``movie_ids`` (missing ones are left out)."""
        response = self._peer.call(
            self._stub.BatchGetMovies,
            movie_pb2.BatchGetMoviesRequest(ids=list(movie_ids)),
            context,
        )
        return [
            CatalogueMovie(
                id=m.id,
                title=m.title,
                price=Money(m.price.currency_code, m.price.amount_minor),
            )
            for m in response.movies
        ]
