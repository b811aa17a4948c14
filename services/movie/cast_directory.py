"""The cast service as the movie service sees it: one BatchGetCasts call per check."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cinema.v1 import cast_pb2, cast_pb2_grpc
from services.common.context import RequestContext
from services.common.peers import PeerChannel
from services.movie.domain import CastMember


class GrpcCastDirectory:
    """:class:`~services.movie.service.CastDirectory` over gRPC."""

    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer
        self._stub = cast_pb2_grpc.CastServiceStub(peer.channel)

    def get_many(self, cast_ids: Sequence[str], context: RequestContext) -> list[CastMember]:
        response = self._peer.call(
            self._stub.BatchGetCasts, cast_pb2.BatchGetCastsRequest(ids=list(cast_ids)), context
        )
        return [
            CastMember(
                id=c.id,
                name=c.name,
                nationality=c.nationality if c.HasField("nationality") else None,
                create_time=c.create_time.ToDatetime(tzinfo=dt.UTC),
                update_time=c.update_time.ToDatetime(tzinfo=dt.UTC),
            )
            for c in response.casts
        ]
