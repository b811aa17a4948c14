"""What a use case knows about the call it serves: who asks, and by when it must answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from services.common.errors import DeadlineExceeded, PermissionDenied, Unauthenticated


class Role(StrEnum):
    """What a principal may do; the values are the ``role`` claim of an access token."""

    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the subject of a verified access token, and the session
    it was issued to ("" for a token of no session)."""

    subject: str
    role: Role
    session_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock by which the caller wants an answer.

    Outbound calls take their timeout from it, so a peer never works on a request that
    its caller has already given up on.
    """

    expires_at: float | None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        return None if self.expires_at is None else self.expires_at - time.monotonic()

    def timeout(self, ceiling: float) -> float:
        """Seconds an outbound call may take: what is left, at most ``ceiling``."""
        left = self.remaining()
        if left is None:
            return ceiling
        if left <= 0:
            raise DeadlineExceeded("the caller's deadline has passed")
        return min(left, ceiling)


#: Metadata the gateway sets once per client call and keeps on its retries of that call
#: (gateway/envoy_config.py): a create that Envoy repeats finds the first one by it.
CALL_ID_METADATA = "x-cinema-call-id"
#: Longest call id kept; longer ones (not Envoy's) are ignored.
CALL_ID_MAX = 200


@dataclass(frozen=True)
class RequestContext:
    """The caller (``None`` when anonymous), its raw bearer token for calls made on its
    behalf, its deadline, and the gateway's id of the call (``None`` when not through it)."""

    principal: Principal | None = None
    bearer_token: str | None = field(default=None, repr=False)
    deadline: Deadline = field(default_factory=lambda: Deadline(None))
    call_id: str | None = None

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated("this call needs an access token")
        return self.principal

    def require_self_or_admin(self, user_id: str) -> Principal:
        """The principal, when it is ``user_id`` itself or an admin."""
        principal = self.require_principal()
        if not principal.is_admin and principal.subject != user_id:
            raise PermissionDenied("only the account owner or an admin may do this")
        return principal
