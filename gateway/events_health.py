"""What ``/healthz`` says about events: whether the broker answers, and how far behind each
consumer is.

The sidecar keeps one NATS connection and reads JetStream's own figures once a second
(stream and consumer info): events in the stream, and per durable consumer the events not
yet delivered (``pending``) and delivered but not yet acked (``inFlight``), plus the dead
letters kept. The broker being away shows here and never turns ``/healthz`` 503: the
services keep serving, and their events wait in the outboxes (each service's
``cinema_outbox_lag_seconds`` says how long).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from services.common.events import subjects

logger = logging.getLogger(__name__)

#: Durable consumers, one per consuming service (services/*/events.py).
CONSUMERS = ("movie", "user", "order")


class EventsHealth:
    """A snapshot of the broker's state, refreshed on the sidecar's event loop."""

    def __init__(self, url: str, *, interval: float = 1.0) -> None:
        self.url = url
        self._interval = interval
        self._snapshot: dict[str, Any] = {"broker": "CONNECTING", "url": url}
        self._task: asyncio.Task[None] | None = None
        self._nc: Any = None

    def snapshot(self) -> dict[str, Any]:
        """The latest view (any thread may read it)."""
        return dict(self._snapshot)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="follow-nats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 2)

    async def _follow(self) -> None:
        import nats

        warned = False
        while True:
            if self._nc is None or not self._nc.is_connected:
                try:
                    if self._nc is None:
                        self._nc = await nats.connect(
                            self.url,
                            name="cinema-gateway-sidecar",
                            connect_timeout=1,
                            max_reconnect_attempts=-1,
                            reconnect_time_wait=0.5,
                        )
                except Exception as error:
                    self._nc = None
                    self._snapshot = {"broker": "UNREACHABLE", "url": self.url}
                    if not warned:
                        logger.warning("NATS at %s does not answer: %s", self.url, error)
                        warned = True
                    await asyncio.sleep(self._interval)
                    continue
            if not self._nc.is_connected:
                self._snapshot = {"broker": "UNREACHABLE", "url": self.url}
                await asyncio.sleep(self._interval)
                continue
            warned = False
            try:
                self._snapshot = await self._read(self._nc.jetstream(timeout=1))
            except Exception as error:
                self._snapshot = {"broker": "CONNECTED", "url": self.url, "error": str(error)}
            await asyncio.sleep(self._interval)

    async def _read(self, js: Any) -> dict[str, Any]:
        from nats.js.errors import NotFoundError

        started = time.monotonic()
        document: dict[str, Any] = {"broker": "CONNECTED", "url": self.url}
        try:
            stream = await js.stream_info(subjects.STREAM)
            document["events"] = int(stream.state.messages)
        except NotFoundError:
            document["events"] = 0  # no service has connected yet
            return document
        consumers: dict[str, Any] = {}
        for name in CONSUMERS:
            try:
                info = await js.consumer_info(subjects.STREAM, name)
            except NotFoundError:
                continue
            consumers[name] = {
                "pending": int(info.num_pending or 0),
                "inFlight": int(info.num_ack_pending or 0),
                "redelivered": int(info.num_redelivered or 0),
            }
        document["consumers"] = consumers
        try:
            dead = await js.stream_info(subjects.DEAD_LETTER_STREAM)
            document["deadLetters"] = int(dead.state.messages)
        except NotFoundError:
            document["deadLetters"] = 0
        document["readMs"] = round((time.monotonic() - started) * 1000, 1)
        return document
