"""Server-assigned resource ids."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

_lock = threading.Lock()
_last_stamp = 0

#: Longest id a request may name. Ids are 32 hex digits (:func:`new_id`); the bound keeps
#: an id that a client made up out of the database, the logs and error details, which echo
#: it (a 5 KB id once made the error itself too large to deliver).
MAX_ID_LENGTH = 64
_ID_TEXT = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a Cinema id, or ``None`` when it can.

    Never quotes the value: it may be what is wrong.
    """
    if not value:
        return "is required"
    if not _ID_TEXT.fullmatch(value):
        return f"is not an id: at most {MAX_ID_LENGTH} characters of A-Z, a-z, 0-9, '-' and '_'"
    return None


def new_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: unique, and sorted by creation time.

    Time order lets lists page by id alone and keeps B-tree inserts at the right edge. The
    12 ``rand_a`` bits carry the sub-millisecond part of the clock (RFC 9562 section 6.2,
    method 3), and a stamp never repeats or goes back within a process, so ids one process
    makes in the same millisecond still sort in the order they were made.
    """
    global _last_stamp
    now = time.time_ns()
    stamp = (now // 1_000_000) << 12 | (now % 1_000_000) * 4096 // 1_000_000
    with _lock:
        stamp = max(stamp, _last_stamp + 1)
        _last_stamp = stamp
    millis, fraction = (stamp >> 12) & ((1 << 48) - 1), stamp & 0xFFF
    random_bits = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = millis << 80 | 0x7 << 76 | fraction << 64 | 0x2 << 62 | random_bits
    return uuid.UUID(int=value).hex
