"""Calls to peer services: every call carries a deadline taken from the caller's
remaining time, and transport failures become domain errors the caller understands.

Use cases run in worker threads, so peers use synchronous channels (thread-safe, one per
peer address, shared by every call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from services.common import tracing
from services.common.context import RequestContext
from services.common.errors import DeadlineExceeded, Unavailable

logger = logging.getLogger(__name__)

Response = TypeVar("Response")

# What says the peer could not serve the call right now; UNAVAILABLE lets the caller
# (and Envoy, for reads) try again. A peer's INTERNAL or UNKNOWN is a bug there, not an
# outage: passing it on as UNAVAILABLE would have Envoy retry a request that fails the
# same way every time, so it is a PeerError (INTERNAL here, with the peer's answer logged).
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


class PeerError(Exception):
    """A peer refused a call for a reason the caller did not expect (a bug, not an outage)."""

    def __init__(self, peer: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{peer} answered {code.name}: {details}")
        self.code = code
        self.details = details


class PeerChannel:
    """A channel to one peer service (by default through the Envoy gateway)."""

    def __init__(self, name: str, address: str, *, timeout_ceiling: float) -> None:
        self.name = name
        self.address = address
        self.timeout_ceiling = timeout_ceiling
        self.channel = tracing.traced_channel(
            grpc.insecure_channel(
                address,
                options=[
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.enable_retries", 0),  # Envoy retries; retrying twice multiplies load
                ],
            )
        )

    def call(
        self,
        method: Callable[..., Response],
        request: Any,
        context: RequestContext,
        *,
        on_behalf: bool = False,
    ) -> Response:
        """Invoke ``method`` with the caller's deadline; forward its token when on behalf.

        UNAVAILABLE-like failures raise :class:`Unavailable`, a passed deadline
        :class:`DeadlineExceeded`, anything else :class:`PeerError`.
        """
        timeout = context.deadline.timeout(self.timeout_ceiling)
        metadata: list[tuple[str, str]] = []
        if on_behalf and context.bearer_token:
            metadata.append(("authorization", f"Bearer {context.bearer_token}"))
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            code = error.code()
            details = error.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(
                    f"the {self.name} service did not answer in time",
                    reason="PEER_DEADLINE_EXCEEDED",
                    metadata={"peer": self.name},
                ) from None
            if code in _TRANSIENT:
                logger.warning(
                    "%s service unavailable at %s: %s %s",
                    self.name,
                    self.address,
                    code.name,
                    details,
                )
                raise Unavailable(
                    f"the {self.name} service is unavailable",
                    reason="PEER_UNAVAILABLE",
                    metadata={"peer": self.name},
                ) from None
            raise PeerError(self.name, code, details) from None

    def close(self) -> None:
        self.channel.close()
