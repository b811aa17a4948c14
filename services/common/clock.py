"""The clock use cases read the time from: injected, so tests can fix it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time, timezone-aware, in UTC: what every service stores."""
    return dt.datetime.now(dt.UTC)
