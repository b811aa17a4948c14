"""``cinema up``: the whole system on one machine.

Envoy in front, every service with ``--replicas`` processes (``cinema serve``), the gateway
sidecar, all on 127.0.0.1 except the public port. The launcher

* keeps its state in ``--data-dir``: one SQLite file per service (unless database URLs
  are given), the JWT signing keys (made on first start), logs, the rendered Envoy config;
  data survives a restart;
* learns each child's port from its first log lines (children bind port 0), so two
  systems on one machine never race for ports; Envoy gets a dynamic base id;
* waits until ``/healthz`` says every service serves, then prints where to reach it;
* restarts a replica that crashes, on the same port, with a back-off;
* on SIGINT/SIGTERM stops everything it started (replicas get SIGTERM and their grace
  period, then SIGKILL) and exits. Children also get SIGKILL if the launcher itself dies
  (Linux ``PR_SET_PDEATHSIG``), so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from services.common.auth import ensure_keypair
from services.common.settings import SERVICES

_GRACE_SECONDS = 10.0
_START_TIMEOUT = 90.0
# What services.common.server and gateway.sidecar log once their ports are bound.
_SERVICE_PORT = re.compile(r"listening on port (\d+)$")
_SIDECAR_PORTS = re.compile(r"serving gRPC on (\d+), /healthz on (\d+)")
_DATABASE_URL_VARIABLES = {service: f"{service.upper()}_DATABASE_URL" for service in SERVICES}


class LaunchError(RuntimeError):
    """Something did not start; the message says what and where its log is."""


try:
    # Loaded here, in the parent: the child must not dlopen between fork and exec.
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - not glibc Linux
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # The kernel sends SIGKILL to the child when the launcher dies, even by SIGKILL, so a
    # crashed launcher leaves no orphans holding ports.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Child:
    """One process the launcher started and supervises."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: pathlib.Path
    # A log message that says the child is bound, with its port(s) as groups.
    ports_pattern: re.Pattern[str] | None = None
    ports: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _port_seen: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._port_seen.clear()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = list(self.argv)
        if self.ports and "--port" in argv:
            argv[argv.index("--port") + 1] = str(self.ports[0])  # a restart keeps its port
        self.process = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            # Own process group: Ctrl-C reaches the launcher alone, which then stops the
            # children in order (gateway first).
            process_group=0,
        )
        threading.Thread(target=self._copy_log, name=f"log-{self.name}", daemon=True).start()

    def _copy_log(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.open("ab") as log:
            for raw in self.process.stdout:
                log.write(raw)
                log.flush()
                if self.ports_pattern and not self._port_seen.is_set():
                    self._parse_ports(raw.decode(errors="replace"))

    def _parse_ports(self, line: str) -> None:
        assert self.ports_pattern is not None
        try:
            message = str(json.loads(line).get("message", ""))
        except (json.JSONDecodeError, AttributeError):
            message = line
        found = self.ports_pattern.search(message)
        if found:
            self.ports = tuple(int(group) for group in found.groups())
            self._port_seen.set()

    def wait_ports(self, timeout: float) -> tuple[int, ...]:
        """The ports the child logged once bound; LaunchError if it dies or takes too long."""
        deadline = time.monotonic() + timeout
        while not self._port_seen.wait(0.1):
            if not self.alive() or time.monotonic() > deadline:
                raise LaunchError(f"{self.name} did not start; see {self.log_path}:\n{self.tail()}")
        return self.ports

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


@dataclass
class Options:
    port: int = 8080
    admin_port: int = 9901
    replicas: int = 2
    data_dir: pathlib.Path = pathlib.Path("cinema-data")
    database_urls: Mapping[str, str] = field(default_factory=dict)
    listen_address: str = "127.0.0.1"


def balancing_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``CINEMA_BALANCING``: a policy for every service (``LEAST_REQUEST``) or per service
    (``movie=RANDOM,cast=ROUND_ROBIN``), over the gateway definition's own
    (``gateway.envoy_config.BALANCING``). The benchmarks compare policies with it."""
    value = environ.get("CINEMA_BALANCING", "").strip()
    if not value:
        return {}
    if "=" not in value:
        return {service: value for service in SERVICES}
    policies: dict[str, str] = {}
    for pair in value.split(","):
        service, _, policy = pair.partition("=")
        policies[service.strip()] = policy.strip()
    return policies


def database_urls_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``MOVIE_DATABASE_URL`` and friends: when given, that service runs on that database."""
    return {
        service: environ[variable]
        for service, variable in _DATABASE_URL_VARIABLES.items()
        if environ.get(variable)
    }


class System:
    """Everything ``cinema up`` starts, in start order."""

    def __init__(self, options: Options, out: IO[str] = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.data_dir = options.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self._lock_file: IO[str] | None = None

    # -- start ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _lock_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.data_dir / "cinema-up.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchError(
                f"{self.data_dir} is used by another `cinema up`; give this one its own "
                "--data-dir (and --port, --admin-port)"
            ) from None

    def _service_env(self, service: str, keys: tuple[pathlib.Path, pathlib.Path]) -> dict[str, str]:
        private_key, public_key = keys
        env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
        env.update(
            {
                "CINEMA_DATA_DIR": str(self.data_dir / "db"),
                "CINEMA_JWT_PUBLIC_KEY_FILE": str(public_key),
                "CINEMA_GATEWAY_ADDR": f"127.0.0.1:{self.options.port}",
                "CINEMA_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for variable in ("CAST_SERVICE_ADDR", "MOVIE_SERVICE_ADDR", "USER_SERVICE_ADDR"):
            env.pop(variable, None)  # peers go through this system's own gateway
        if service in self.options.database_urls:
            env["DATABASE_URL"] = self.options.database_urls[service]
        if service == "user":
            env["CINEMA_JWT_PRIVATE_KEY_FILE"] = str(private_key)
        return env

    def start(self) -> None:
        from gateway import envoy_config

        self._lock_data_dir()
        keys = ensure_keypair(self.data_dir / "keys")
        cinema = str(pathlib.Path(sys.executable).parent / "cinema")
        backend = "PostgreSQL" if self.options.database_urls else "SQLite"
        self.say(
            f"Starting Cinema ({self.options.replicas} replicas per service, {backend}, "
            f"data in {self.data_dir})"
        )
        sidecar = Child(
            name="sidecar",
            argv=[
                cinema,
                "gateway-sidecar",
                "--admin-url",
                f"http://127.0.0.1:{self.options.admin_port}",
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--log-format",
                "json",
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            log_path=self.logs / "sidecar.log",
            ports_pattern=_SIDECAR_PORTS,
        )
        self.children.append(sidecar)
        sidecar.start()  # it needs nothing of the replicas: start it beside them
        replicas: list[tuple[str, Child]] = []
        for service in SERVICES:
            env = self._service_env(service, keys)
            for replica in range(1, self.options.replicas + 1):
                child = Child(
                    name=f"{service}-{replica}",
                    argv=[cinema, "serve", service, "--host", "127.0.0.1", "--port", "0"],
                    env=env,
                    log_path=self.logs / f"{service}-{replica}.log",
                    ports_pattern=_SERVICE_PORT,
                )
                self.children.append(child)
                child.start()  # all at once; replicas of one service take turns migrating
                replicas.append((service, child))
        ports: dict[str, list[int]] = {}
        for service, child in replicas:
            (port,) = child.wait_ports(_START_TIMEOUT)
            ports.setdefault(service, []).append(port)
            self.say(f"  started {child.name:<8} on 127.0.0.1:{port}")
        grpc_port, http_port = sidecar.wait_ports(_START_TIMEOUT)
        topology = envoy_config.local_topology(
            ports,
            sidecar_grpc_port=grpc_port,
            sidecar_http_port=http_port,
            listen_address=self.options.listen_address,
            listen_port=self.options.port,
            admin_port=self.options.admin_port,
        )
        config_path = self.data_dir / "envoy.yaml"
        try:
            rendered = envoy_config.render(topology, balancing=balancing_from_env(os.environ))
        except ValueError as error:
            raise LaunchError(f"CINEMA_BALANCING: {error}") from None
        config_path.write_text(envoy_config.dump_yaml(rendered))
        envoy = Child(
            name="envoy",
            argv=[
                str(pathlib.Path(sys.executable).parent / "envoy"),
                "-c",
                str(config_path),
                *envoy_config.command_line_flags(),
                "--use-dynamic-base-id",
                "--log-level",
                "warn",
            ],
            env=dict(os.environ),
            log_path=self.logs / "envoy.log",
        )
        self.children.append(envoy)
        envoy.start()
        self._wait_healthy()
        self._write_state()

    def healthz(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.options.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        last = ""
        while True:
            for child in self.children:
                if not child.alive():
                    raise LaunchError(
                        f"{child.name} exited while starting; see {child.log_path}:\n{child.tail()}"
                    )
            try:
                status, document = self.healthz()
            except (OSError, json.JSONDecodeError):
                status, document = 0, {}
            summary = ", ".join(
                f"{name} {info.get('healthyReplicas', 0)}/{info.get('replicas', 0)}"
                for name, info in document.get("services", {}).items()
            )
            if summary and summary != last:
                self.say(f"  healthy replicas: {summary}")
                last = summary
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"the system did not become healthy in {_START_TIMEOUT:.0f}s "
                    f"({summary or 'gateway not answering'}); logs in {self.logs}"
                )
            time.sleep(0.1)  # a poll is one local HTTP call; answer "up" as soon as it is

    def _write_state(self) -> None:
        state = {
            "port": self.options.port,
            "admin_port": self.options.admin_port,
            "launcher_pid": os.getpid(),
            "processes": [
                {
                    "name": c.name,
                    "pid": c.process.pid if c.process else None,
                    "ports": list(c.ports),
                    "log": str(c.log_path),
                }
                for c in self.children
            ],
        }
        (self.data_dir / "state.json").write_text(json.dumps(state, indent=2))

    def banner(self) -> str:
        port = self.options.port
        admin = os.environ.get("CINEMA_ADMIN_EMAIL")
        login = (
            f"  Log in as the first admin ({admin}):\n"
            f"    curl -s -X POST localhost:{port}/api/v1/auth/login "
            f'-d "{{\\"email\\": \\"{admin}\\", \\"password\\": \\"$CINEMA_ADMIN_PASSWORD\\"}}"'
            if admin
            else "  No admin yet: restart with CINEMA_ADMIN_EMAIL and CINEMA_ADMIN_PASSWORD "
            "set to create the first one."
        )
        return "\n".join(
            [
                "",
                f"Cinema is up on http://localhost:{port}",
                f"  JSON:    curl -s localhost:{port}/api/v1/movies",
                f"  gRPC:    grpcurl -plaintext localhost:{port} list",
                f"  health:  curl -s localhost:{port}/healthz",
                f"  admin:   http://127.0.0.1:{self.options.admin_port} (Envoy, loopback only)",
                login,
                f"  logs:    {self.logs}",
                "Press Ctrl-C to stop.",
            ]
        )

    # -- run and stop -----------------------------------------------------------------

    def supervise(self) -> None:
        """Until asked to stop: restart crashed replicas on their port, with back-off."""
        while not self.stopping.wait(0.5):
            for child in self.children:
                if child.alive() or self.stopping.is_set():
                    continue
                code = child.process.returncode if child.process else None
                delay = min(2 ** min(child.restarts, 5) * 0.5, 15.0)
                self.say(f"{child.name} exited ({code}); restarting in {delay:.1f}s")
                if self.stopping.wait(delay):
                    return
                child.restarts += 1
                child.start()
                self._write_state()

    def stop(self) -> None:
        """SIGTERM to everything (gateway first, so no new calls arrive), then SIGKILL."""
        self.stopping.set()
        for child in reversed(self.children):
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_SECONDS + 2
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.signal(signal.SIGKILL)
                child.process.wait(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "state.json").unlink()
        if self._lock_file is not None:
            self._lock_file.close()


def run(options: Options) -> int:
    """Start the system, serve until SIGINT/SIGTERM, stop it. The exit status of ``up``."""
    system = System(options)
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        system.stopping.set()

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            system.start()
        except LaunchError as error:
            print(f"cinema up: {error}", file=sys.stderr)
            return 1
        if received:
            return 0
        system.say(system.banner())
        system.supervise()
        system.say("\nStopping Cinema...")
        return 0
    finally:
        system.stop()
        for stopped, handler in previous.items():
            signal.signal(stopped, handler)


def parse_database_urls(values: Sequence[str]) -> dict[str, str]:
    """``SERVICE=URL`` pairs from ``--database-url``."""
    urls: dict[str, str] = {}
    for value in values:
        service, sep, url = value.partition("=")
        if not sep or service not in SERVICES or not url:
            raise ValueError(f"--database-url takes SERVICE=URL with SERVICE in {SERVICES}")
        urls[service] = url
    return urls
