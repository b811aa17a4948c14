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

from services.common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int, field: str = "page_size") -> int:
    """The effective page size: the default for 0, else 1 to MAX_PAGE_SIZE."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidArgument(
            [FieldViolation(field, f"must be between 0 and {MAX_PAGE_SIZE}, got {value}")]
        )
    return value


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
