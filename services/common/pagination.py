"""List pagination (AIP-158): page sizes and opaque keyset page tokens.

A token holds the sort key of the last item returned and a fingerprint of the filters it
was made for, so a token reused with other filters is refused instead of silently
returning the wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
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


# A token is client input: anything a client sends must come back as INVALID_ARGUMENT, never
# as an exception out of base64, UTF-8 or json (RecursionError on ``[[[[...`` is not even a
# ValueError). So the token is checked from the outside in, cheapest check first.
#
# The length cap comes before any decoding: a page_token may be as large as the gRPC message
# limit (4 MiB), and nothing below should base64-decode and parse that much for a request that
# cannot be valid. The largest token encode_token makes (a MAX_KEY_LENGTH key) is 212
# characters; 512 leaves room for a longer fingerprint one day, and at most 384 bytes of JSON
# cannot nest anywhere near the parser's recursion limit (1000).
MAX_TOKEN_LENGTH = 512
# The last key goes into ``WHERE id > :after`` (``<`` for newest-first lists) of every
# repository. Ids are 32 hex digits (services.common.ids); the key must be the same kind of
# text: bounded, ASCII letters, digits, ``-`` and ``_`` only. That rules out NUL (which
# PostgreSQL refuses to bind), lone surrogates (which no driver can encode to UTF-8) and
# non-ASCII text (which PostgreSQL and SQLite would order differently under their collations).
MAX_KEY_LENGTH = 128
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]+")  # unpadded base64url, what encode_token writes
_KEY_TEXT = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_KEY_LENGTH}}}")
_FINGERPRINT_TEXT = re.compile(r"[0-9a-f]{16}")


def encode_token(last_key: str, filters: dict[str, str]) -> str:
    """The opaque token of the page after the item whose sort key is ``last_key``.

    Raises ValueError for a key :func:`decode_token` would refuse: handing out a token
    that cannot be used is a bug of the caller, better found at once than on the next page.
    """
    if not _KEY_TEXT.fullmatch(last_key):
        raise ValueError(f"a page token key must match {_KEY_TEXT.pattern}, got {last_key!r}")
    payload = json.dumps({"k": last_key, "f": _fingerprint(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _parse_token(token: str) -> tuple[str, str] | None:
    """The last key and the fingerprint a token carries, or ``None`` when it is malformed.

    Total over ``str``: no input makes it raise.
    """
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_TEXT.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        # Decoded as strict UTF-8 first: json.loads(bytes) would guess UTF-16 or UTF-32 too.
        payload = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError included
        return None
    if not isinstance(payload, dict) or payload.keys() != {"k", "f"}:
        return None
    last_key, fingerprint = payload["k"], payload["f"]
    if not isinstance(last_key, str) or not _KEY_TEXT.fullmatch(last_key):
        return None
    if not isinstance(fingerprint, str) or not _FINGERPRINT_TEXT.fullmatch(fingerprint):
        return None
    return last_key, fingerprint


def decode_token(token: str, filters: dict[str, str], field: str = "page_token") -> str | None:
    """The last key of the previous page, or ``None`` for the first page (empty token).

    Any other string that is not a token :func:`encode_token` made is INVALID_ARGUMENT
    ("malformed page token" on ``field``), and so is a token made for other ``filters``.
    The key returned is at most MAX_KEY_LENGTH ASCII letters, digits, ``-`` or ``_``.
    """
    if not token:
        return None
    parsed = _parse_token(token)
    if parsed is None:
        raise InvalidArgument([FieldViolation(field, "malformed page token")])
    last_key, fingerprint = parsed
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
