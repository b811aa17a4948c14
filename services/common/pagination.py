"""List pagination (AIP-158): page sizes and opaque keyset page tokens.

A token holds the sort key of the last item returned and a fingerprint of the filters it
was made for, so a token reused with other filters is refused instead of silently
returning the wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from services.common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int, field: str = "page_size") -> int:
    """The effective page size: the default for 0, the value itself up to MAX_PAGE_SIZE,
    and MAX_PAGE_SIZE for anything larger (AIP-158: a server lowers a page size it cannot
    honour rather than refusing it). Only a negative size is INVALID_ARGUMENT."""
    if value < 0:
        raise InvalidArgument([FieldViolation(field, f"must not be negative, got {value}")])
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def _fingerprint(filters: dict[str, str]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_token(last_key: str, filters: dict[str, str]) -> str:
    payload = json.dumps({"k": last_key, "f": _fingerprint(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_token(token: str, filters: dict[str, str], field: str = "page_token") -> str | None:
    """The last key of the previous page, or ``None`` for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        last_key, fingerprint = payload["k"], payload["f"]
        if not isinstance(last_key, str) or not isinstance(fingerprint, str):
            raise TypeError
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument([FieldViolation(field, "malformed page token")]) from None
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument([FieldViolation(field, "page token was made for other filters")])
    return last_key


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=_Identified)


@dataclass(frozen=True)
class Page(Generic[Item]):
    """One page of a list, and the token of the next page (empty on the last one)."""

    items: list[Item]
    next_page_token: str


def keyset_page(
    size: int,
    token: str,
    filters: dict[str, str],
    fetch: Callable[[str | None, int], list[Item]],
) -> Page[Item]:
    """One page of a list ordered by id, paged by the id of its last item.

    ``fetch(after, limit)`` returns at most ``limit`` items that come after the id
    ``after`` (``None``: from the start) in the list's order. One item more than the page
    is asked for, so the last page is known without a second query.
    """
    limit = page_size(size)
    after = decode_token(token, filters)
    items = fetch(after, limit + 1)
    if len(items) <= limit:
        return Page(items, "")
    items = items[:limit]
    return Page(items, encode_token(items[-1].id, filters))
