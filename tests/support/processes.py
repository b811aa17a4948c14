"""``cinema serve`` as a real child process, as a container would run it."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

BIN = pathlib.Path(sys.executable).parent


def tool(name: str) -> str:
    """A command installed beside this interpreter (cinema, grpcurl, envoy)."""
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed in {BIN}; run scripts/setup")
    return str(path)


def free_port() -> int:
    """A loopback port that was free a moment ago (``cinema up`` holds the ports it is
    given from its start, so its own children cannot take them)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_LISTENING = re.compile(r"listening on port (\d+)(?:, metrics on port (\d+))?")


@dataclass
class ServiceProcess:
    process: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)
    #: Where the process serves /metrics (None when it serves none).
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_cinema_serve(
    service: str, env: Mapping[str, str], *, timeout: float = 30
) -> ServiceProcess:
    """Run ``cinema serve SERVICE --port 0`` and wait for the port it logs."""
    process = subprocess.Popen(
        [tool("cinema"), "serve", service, "--host", "127.0.0.1", "--port", "0"],
        env={**os.environ, **env, "CINEMA_LOG_FORMAT": "json"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    port: list[int] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            try:
                message = json.loads(line).get("message", "")
            except json.JSONDecodeError:
                continue
            found = _LISTENING.search(message)
            if found:
                port.append(int(found.group(1)))
                if found.group(2):
                    port.append(int(found.group(2)))
            if port and " is SERVING" in message:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"cinema serve {service} did not start:\n{''.join(lines)}")
    return ServiceProcess(process, port[0], lines, port[1] if len(port) > 1 else None)
