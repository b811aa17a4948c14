"""Ended sessions, kept in memory by every process until their access tokens expire.

Access tokens are verified locally (no call to the user service), so a logout reaches the
other services as an event: ``SessionRevoked`` (session id and the expiry of its last
token), which every process reads on a consumer of its own
(:class:`services.common.events.bus.EventBus`), from as far back as a live token can reach,
before it reports SERVING. The authorization interceptor then refuses a token whose
``sid`` is here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Revocations:
    """Session id -> the Unix time until which its tokens are refused."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        #: Set once the revocations that existed at start have all been read.
        self.loaded = threading.Event()

    def add(self, session_id: str, until: float) -> None:
        with self._lock:
            self._until[session_id] = max(until, self._until.get(session_id, 0.0))
            if len(self._until) % 1024 == 0:
                self._forget_expired()

    def is_revoked(self, session_id: str) -> bool:
        """Whether the session ``session_id`` ended and its tokens may still be unexpired."""
        if not session_id:
            return False
        until = self._until.get(session_id)  # a dict read is atomic: no lock on the hot path
        return until is not None and until > self._clock()

    def __len__(self) -> int:
        return len(self._until)

    def _forget_expired(self) -> None:
        now = self._clock()
        for session_id in [s for s, until in self._until.items() if until <= now]:
            del self._until[session_id]
