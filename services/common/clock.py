"""The clock use cases read the time from: injected, so tests can fix it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time, timezone-aware, in UTC: what every service stores."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A stored timestamp as an aware UTC datetime (SQLite hands back naive ones)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
