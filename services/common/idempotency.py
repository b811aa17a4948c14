"""Idempotent creates (AIP-155): a repeated create answers what the first one made.

A create is keyed by the client's ``request_id`` when it sends one, otherwise by the
gateway's id of the call (:data:`~services.common.context.CALL_ID_METADATA`, which Envoy
keeps on its own retries of a call), otherwise not at all. The key and a fingerprint of
the request are stored beside the resource under a unique index, so the rules hold
across replicas and restarts:

* a repeat with the same key and fingerprint answers the stored resource, before any peer
  is asked or any costly work is done;
* the same key with another fingerprint is ALREADY_EXISTS, reason
  ``IDEMPOTENCY_KEY_REUSED``;
* concurrent first calls all insert; the unique index lets one win, and the others read
  the winner's resource and answer it.

A key lives as long as its resource: once the resource is deleted, the key may make a new
one. A replay answers the resource as it is now, which may have been updated since.

CreateOrder keeps its own required key and check in ``services/order/domain.py``, written
before this module; ``tests/unit/test_idempotency.py`` keeps its limit and reason equal to
these.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from sqlalchemy.exc import IntegrityError

from services.common.context import CALL_ID_MAX, CALL_ID_METADATA
from services.common.errors import AlreadyExists, Violations

logger = logging.getLogger(__name__)

REQUEST_ID_MAX = 100
REASON_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
#: Width of the ``request_key`` columns: the longest key is ``"call:"`` and a call id.
REQUEST_KEY_MAX = 240
#: Width of the ``request_hash`` columns: a sha256 in hex.
REQUEST_HASH_LENGTH = 64


class KeySource(StrEnum):
    """Who chose a key. The value prefixes the stored key, so a client's ``request_id``
    can never equal the gateway's id of some other call."""

    REQUEST = "request"
    CALL = "call"


@dataclass(frozen=True)
class IdempotencyKey:
    """The key of one create, as chosen by the client or by the gateway."""

    source: KeySource
    value: str

    @property
    def stored(self) -> str:
        """The key as the ``request_key`` column holds it: ``"<source>:<value>"``."""
        return f"{self.source.value}:{self.value}"


@dataclass(frozen=True)
class RequestRecord:
    """What a keyed create stores beside its resource: the key and the request's fingerprint."""

    key: IdempotencyKey
    request_hash: str


def check_request_id(request_id: str, field: str, violations: Violations) -> None:
    """An optional idempotency key: empty (none given), or 1 to 100 characters that are
    not all blanks. Opaque otherwise: neither trimmed nor case-folded."""
    if not request_id:
        return
    if not request_id.strip():
        violations.add(field, "must not be blank: leave it empty or send a key such as a UUID")
    elif len(request_id) > REQUEST_ID_MAX:
        violations.add(field, f"must be at most {REQUEST_ID_MAX} characters")


def request_key(
    request_id: str, call_id: str | None, violations: Violations, field: str = "request_id"
) -> IdempotencyKey | None:
    """The key of a create: ``request_id`` when given (problems go to ``violations``),
    else the gateway's ``call_id``, else None (the create is not deduplicated)."""
    if request_id:
        check_request_id(request_id, field, violations)
        return IdempotencyKey(KeySource.REQUEST, request_id)
    # The interceptor keeps only call ids that fit; checked again because the column's
    # width depends on it.
    if call_id and len(call_id) <= CALL_ID_MAX:
        return IdempotencyKey(KeySource.CALL, call_id)
    return None


def fingerprint(fields: Mapping[str, object]) -> str:
    """A sha256 (hex) of the canonical JSON of a request's validated fields.

    Give it the fields after validation and normalisation, so a retry that differs only in
    what the service trims or drops counts as the same request. Never give it a secret:
    the fingerprint is stored, and a sha256 of a secret is a guessable copy of it.
    """
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyKeyReused(AlreadyExists):
    """The key was used before by a create that asked for something else."""

    reason = REASON_KEY_REUSED

    def __init__(self, key: IdempotencyKey, resource_type: str, resource_id: str | None) -> None:
        metadata = {"resource_type": resource_type}
        if key.source is KeySource.REQUEST:
            message = (
                f"request_id {key.value!r} was already used to create a {resource_type} with "
                "other fields; use a new request_id for a different request"
            )
            metadata["request_id"] = key.value
        else:
            message = (
                f"this call ({CALL_ID_METADATA} {key.value!r}) already created a "
                f"{resource_type} with other fields"
            )
            metadata["call_id"] = key.value
        if resource_id is not None:
            metadata[f"{resource_type}_id"] = resource_id
        super().__init__(message, metadata=metadata)


class DuplicateRequestKey(Exception):
    """Another resource was stored first with the same request key (raised by repositories).

    The transaction that raised it is spoilt (PostgreSQL aborts it): read the winner in a
    new one.
    """


def is_unique_violation(error: IntegrityError, *, constraint: str, column: str) -> bool:
    """Whether ``error`` is a duplicate in the unique index ``constraint`` on ``column``
    (``"table.column"``).

    PostgreSQL names the constraint (psycopg2's ``diag``), SQLite the column. Never decided
    by searching the message: PostgreSQL's quotes the duplicate value, and a client's key
    may well spell another constraint's name.
    """
    name = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
    if name is not None:
        return bool(name == constraint)
    return str(error.orig) == f"UNIQUE constraint failed: {column}"


class _Resource(Protocol):
    @property
    def id(self) -> str: ...


ResourceT = TypeVar("ResourceT", bound=_Resource)


def create_once(
    record: RequestRecord | None,
    resource_type: str,
    *,
    find: Callable[[str], tuple[ResourceT, str] | None],
    create: Callable[[], ResourceT],
    reveal_id: bool = True,
) -> ResourceT:
    """Run a create at most once per key (module docstring).

    ``find(stored_key)`` reads the resource stored with a key and its fingerprint.
    ``create()`` makes the resource (peer checks included) and stores it with ``record``,
    raising :class:`DuplicateRequestKey` when the key is taken; it may raise
    another AlreadyExists instead when the resource has a second unique field (an email)
    that the database happened to check first. ``reveal_id=False`` keeps the stored
    resource's id out of a key-reused error, for creates anyone may call.
    """
    if record is None:
        return create()
    found = find(record.key.stored)
    if found is None:
        try:
            return create()
        except (AlreadyExists, DuplicateRequestKey) as conflict:
            # Lost a race, or a conflict of its own (an email taken by another account)?
            # Only the stored key tells.
            found = find(record.key.stored)
            if found is None:
                if isinstance(conflict, DuplicateRequestKey):
                    raise RuntimeError(
                        f"{resource_type} insert failed on a request key that is not stored"
                    ) from conflict
                raise
    resource, stored_hash = found
    if stored_hash != record.request_hash:
        raise IdempotencyKeyReused(record.key, resource_type, resource.id if reveal_id else None)
    logger.info(
        "answered a repeated create of %s %s (%s key)",
        resource_type,
        resource.id,
        record.key.source.value,
    )
    return resource
