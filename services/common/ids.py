"""Server-assigned resource ids."""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: unique, and sorted by creation time.

    Time order lets lists page by id alone and keeps B-tree inserts at the right edge.
    """
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return uuid.UUID(int=value).hex
