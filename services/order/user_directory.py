"""The user service as the order service sees it: does the buyer's account still exist?"""

from __future__ import annotations

import grpc

from cinema.v1 import user_pb2, user_pb2_grpc
from services.common.context import RequestContext
from services.common.errors import Unauthenticated
from services.common.peers import PeerChannel, PeerError


class GrpcUserDirectory:
    """:class:`~services.order.service.UserDirectory` over gRPC (UserService.GetUser)."""

    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer
        self._stub = user_pb2_grpc.UserServiceStub(peer.channel)

    def exists(self, user_id: str, context: RequestContext) -> bool:
        """Whether ``user_id`` has an account, asked on behalf of the caller.

        GetUser lets a user read only their own account, so the caller's token is
        forwarded; the buyer is always the caller.
        """
        try:
            self._peer.call(
                self._stub.GetUser, user_pb2.GetUserRequest(id=user_id), context, on_behalf=True
            )
        except PeerError as error:
            if error.code == grpc.StatusCode.NOT_FOUND:
                return False
            if error.code == grpc.StatusCode.UNAUTHENTICATED:
                # The token expired between our check and the user service's.
                raise Unauthenticated("the access token is no longer accepted") from None
            raise
        return True
