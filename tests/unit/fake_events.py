"""An in-memory outbox and inbox for unit tests of use cases (fakes of pure logic only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any


class RecordingOutbox:
    """Keeps the events a use case stored, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def add(self, event: Any, occur_time: dt.datetime) -> None:
        self.events.append(event)


class MemoryInbox:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def applied(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        return {e for e in event_ids if (consumer, e) in self.seen}

    def first_delivery(self, consumer: str, event_id: str, now: dt.datetime) -> bool:
        key = (consumer, event_id)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True
