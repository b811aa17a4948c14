"""The whole system as a user runs it: ``cinema up`` in a child process, on free ports,
with a fresh data directory, stopped (and checked to leave nothing behind) at the end."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.mail import Mailbox
from tests.support.processes import free_port, tool

ADMIN_EMAIL = "root@cinema.test"
ADMIN_PASSWORD = "correct horse battery staple"  # test-only; nothing ships a default


@dataclass
class JsonReply:
    status: int
    body: Any
    headers: Mapping[str, str]


@dataclass
class RunningSystem:
    """A ``cinema up`` child process and how to talk to it."""

    process: subprocess.Popen[str]
    port: int
    admin_port: int
    data_dir: pathlib.Path
    output: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "state.json").read_text()))

    def pids(self, prefix: str) -> list[int]:
        return [p["pid"] for p in self.state()["processes"] if p["name"].startswith(prefix)]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
    ) -> JsonReply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(f"http://{self.address}{path}", data=data, method=method)
        request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=15) as reply:
                payload = reply.read()
                status, reply_headers = reply.status, dict(reply.headers)
        except urllib.error.HTTPError as error:
            payload, status, reply_headers = error.read(), error.code, dict(error.headers)
        try:
            parsed = json.loads(payload) if payload else None
        except json.JSONDecodeError:
            parsed = payload.decode(errors="replace")
        return JsonReply(status, parsed, reply_headers)

    def login(self, email: str, password: str) -> str:
        reply = self.request("POST", "/api/v1/auth/login", {"email": email, "password": password})
        assert reply.status == 200, reply
        return str(reply.body["accessToken"])

    @property
    def mailbox(self) -> Mailbox:
        """The mail the user service wrote (``cinema up`` keeps it in the data directory)."""
        return Mailbox(self.data_dir / "mail")

    def register(self, email: str, password: str, display_name: str = "Film Fan") -> JsonReply:
        """Register as a person does through JSON: POST /api/v1/users, then the link in the
        mail; the account made (the answer of ``:verifyEmail``)."""
        fields = {"email": email, "password": password, "displayName": display_name}
        created = self.request("POST", "/api/v1/users", fields)
        assert created.status == 200, created
        token = self.mailbox.token(email)
        link = {"token": token, "password": password}
        made = self.request("POST", "/api/v1/users:verifyEmail", link)
        assert made.status == 200, made
        return made


def start_system(
    data_dir: pathlib.Path,
    *,
    replicas: int = 2,
    extra_env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> RunningSystem:
    port, admin_port = free_port(), free_port()
    env = {
        # Without NATS_URL, cinema up runs a nats-server of its own (not the machine's).
        **{k: v for k, v in os.environ.items() if k != "NATS_URL"},
        "CINEMA_ADMIN_EMAIL": ADMIN_EMAIL,
        "CINEMA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # Light argon2 keeps login fast in tests; production defaults stay in the code.
        "CINEMA_ARGON2_TIME_COST": "1",
        "CINEMA_ARGON2_MEMORY_KIB": "1024",
        "CINEMA_ARGON2_PARALLELISM": "1",
        "CINEMA_GRACE_SECONDS": "3",
        # The tests sign up many users from 127.0.0.1; the limits have their own test.
        "CINEMA_RATE_LIMITS": "off",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [tool("cinema"), "up", "--port", str(port), "--admin-port", str(admin_port),
         "--replicas", str(replicas), "--data-dir", str(data_dir), *extra_args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    system = RunningSystem(process, port, admin_port, data_dir)
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            system.output.append(line)
            if line.startswith("Cinema is up"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 120
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("cinema up did not start:\n" + "".join(system.output))
    return system


def stop_system(system: RunningSystem) -> list[int]:
    """SIGTERM the launcher, wait, and return the pids it started that are still alive."""
    pids = [p["pid"] for p in system.state()["processes"] if p["pid"]]
    system.process.send_signal(signal.SIGTERM)
    assert system.process.wait(timeout=60) == 0, "".join(system.output[-30:])
    survivors = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            survivors.append(pid)
        except ProcessLookupError:
            pass
    return survivors


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = start_system(tmp_path_factory.mktemp("cinema-up"))
    try:
        yield running
    finally:
        if running.process.poll() is None:
            survivors = stop_system(running)
            assert survivors == [], f"cinema up left processes behind: {survivors}"


@pytest.fixture(scope="session")
def admin_token(system: RunningSystem) -> str:
    return system.login(ADMIN_EMAIL, ADMIN_PASSWORD)
