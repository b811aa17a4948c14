"""Password hashing: argon2id through argon2-cffi, with the cost from the settings.

Production runs argon2-cffi's own defaults (RFC 9106 low-memory profile, about 140 ms
per verify on the project's machines); tests lower the cost through the same settings.
At most ``max_concurrent`` hashes or verifies run at once, and a call beyond that is
refused at once (RESOURCE_EXHAUSTED, reason PASSWORD_CHECKS_BUSY) rather than queued: each
one holds a worker thread for its whole ~140 ms, so a flood of anonymous logins used to
occupy every worker and starve GetUser (and so CreateOrder) for seconds. Refusing leaves
the other workers free for everything else; the rate limit at Envoy keeps the flood small.

Hashes are PHC strings (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``) that name their
own parameters, so a hash made with older parameters still verifies and
:meth:`PasswordHasher.needs_rehash` says when to replace it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Iterator

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.errors import ResourceExhausted
from services.common.settings import Argon2Parameters

logger = logging.getLogger(__name__)


class PasswordHasher:
    """Hashes and verifies passwords; never logs or keeps them."""

    def __init__(self, parameters: Argon2Parameters, *, max_concurrent: int = 2) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._hasher = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=argon2.Type.ID,
        )
        # A hash of a random password nobody knows, with the current parameters: an
        # unknown email is checked against it, so it costs what a wrong password costs.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted(
                "too many password checks in progress; retry in a moment",
                reason="PASSWORD_CHECKS_BUSY",
            )
        try:
            yield
        finally:
            self._slots.release()

    def hash(self, password: str) -> str:
        """A salted argon2id hash (PHC string) of ``password``."""
        with self._slot():
            return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; a damaged hash never matches."""
        try:
            with self._slot():
                return self._hasher.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError):
            # Not the hash's contents: they would be a clue to it.
            logger.warning("a stored password hash cannot be read; treating it as a mismatch")
            return False

    def verify_dummy(self, password: str) -> bool:
        """Spend the work of one verification for an account that does not exist.

        Always ``False``; it exists so that an unknown email and a wrong password take
        the same time.
        """
        self.verify(self._dummy_hash, password)
        return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether ``password_hash`` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True
