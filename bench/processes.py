"""The processes a benchmark run starts for itself, each stopped when the run ends.

* :func:`start_stub`: the echo stub (:mod:`bench.stub`).
* :func:`start_stub_gateway`: an Envoy for the stub, rendered by the gateway's own
  :func:`gateway.envoy_config.render` (same filters, routes, retries, access log), with
  every cluster pointing at the stub, so "echo through Envoy" prices exactly the hop
  Cinema's gateway adds.
* :func:`start_cinema_serve`: one ``cinema serve SERVICE`` process.
* :class:`CinemaUp`: the whole system (``cinema up``) on free ports.
* :class:`PostgresDatabases`: fresh PostgreSQL databases, dropped afterwards.

Every child runs in its own process group and gets SIGTERM, then SIGKILL, at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.engine import make_url

from bench import pg
from bench.target import check_database_url

BIN = pathlib.Path(sys.executable).parent


class StartError(RuntimeError):
    """A process the benchmark needs did not start; the message carries its log tail."""


def tool(name: str) -> str:
    """A command installed beside this interpreter (cinema, envoy)."""
    path = BIN / name
    if not path.exists():
        raise StartError(f"{name} is not installed in {BIN}; run scripts/setup")
    return str(path)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Child:
    """A started process whose output goes to ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: pathlib.Path
    port: int = 0
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()


def spawn(
    name: str, argv: Sequence[str], log_path: pathlib.Path, env: Mapping[str, str] | None = None
) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    process = subprocess.Popen(
        list(argv),
        env=dict(env if env is not None else os.environ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    return Child(name, process, log_path, _log=log)


def _wait_for_log(child: Child, pattern: str, timeout: float) -> re.Match[str]:
    """The first match of ``pattern`` in the child's log, waiting up to ``timeout``."""
    compiled = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = compiled.search(child.log_path.read_text(errors="replace"))
        if match:
            return match
        if child.process.poll() is not None:
            break
        time.sleep(0.05)
    child.stop(timeout=2)
    raise StartError(f"{child.name} did not start; its log ends:\n{child.tail()}")


def start_stub(log_dir: pathlib.Path, *, bare: bool = False) -> Child:
    """The echo stub on a free loopback port (see :mod:`bench.stub` for the variants)."""
    name = "stub" + ("-bare" if bare else "")
    argv = [sys.executable, "-m", "bench.stub", "--host", "127.0.0.1", "--port", "0"]
    if bare:
        argv.append("--bare")
    child = spawn(name, argv, log_dir / f"{name}.log", {**os.environ, "PYTHONUNBUFFERED": "1"})
    child.port = int(_wait_for_log(child, r"stub listening on port (\d+)", 30).group(1))
    return child


def start_serving_model(
    log_dir: pathlib.Path,
    model: str,
    database_url: str,
    *,
    echo: bool,
    python_path: pathlib.Path | None = None,
    name: str | None = None,
) -> Child:
    """One model of the serving A/B (:mod:`bench.serving`) on a free loopback port;
    ``python_path`` goes first on ``PYTHONPATH`` (another grpcio)."""
    label = name or f"serving-{model}" + ("-echo" if echo else "")
    argv = [sys.executable, "-m", "bench.serving", model, "--database-url", database_url]
    if echo:
        argv.append("--echo")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if python_path is not None:
        repo = str(pathlib.Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([str(python_path), repo])
    child = spawn(label, argv, log_dir / f"{label}.log", env)
    child.port = int(_wait_for_log(child, r"serving \S+ on port (\d+)", 60).group(1))
    return child


def start_stub_gateway(work_dir: pathlib.Path, stub_port: int) -> Child:
    """Envoy in front of the stub, from the gateway's renderer; waits until it routes."""
    from gateway import envoy_config

    listen_port, admin_port = free_port(), free_port()
    topology = envoy_config.local_topology(
        {key: [stub_port] for key in envoy_config.SERVICES},
        # The sidecar routes (reflection, /healthz) are not benchmarked; point them at the
        # stub so the clusters are well-formed.
        sidecar_grpc_port=stub_port,
        sidecar_http_port=stub_port,
        listen_port=listen_port,
        admin_port=admin_port,
    )
    config = envoy_config.render(topology)
    config_path = work_dir / "stub-envoy.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(envoy_config.dump_yaml(config))
    child = spawn(
        "stub-envoy",
        [
            tool("envoy"),
            "-c",
            str(config_path),
            *envoy_config.command_line_flags(),
            "--use-dynamic-base-id",
            "--log-level",
            "warn",
        ],
        work_dir / "logs" / "stub-envoy.log",
    )
    child.port = listen_port
    wait_http_ok(child, f"http://127.0.0.1:{admin_port}/ready", 30)
    # The movie cluster turns healthy after its first gRPC health check.
    wait_for_cluster(child, admin_port, "movie", 30)
    return child


def wait_http_ok(
    child: Child, url: str, timeout: float, *, more_log: Callable[[Child], str] | None = None
) -> None:
    """Wait until ``url`` answers 200; StartError with the child's log tail (and
    ``more_log(child)``, e.g. a second log file) if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            break
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310
            if reply.status == 200:
                return
        time.sleep(0.1)
    tail = child.tail() + ("\n" + more_log(child) if more_log is not None else "")
    child.stop(timeout=2)
    raise StartError(f"{child.name} did not answer {url}; its log ends:\n{tail}")


def wait_for_cluster(child: Child, admin_port: int, cluster: str, timeout: float) -> None:
    url = f"http://127.0.0.1:{admin_port}/clusters?format=json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(url, timeout=2) as reply:
                document = json.loads(reply.read())
            for status in document.get("cluster_statuses", []):
                if status.get("name") != cluster:
                    continue
                hosts = status.get("host_statuses", [])
                if hosts and all(
                    h.get("health_status", {}).get("eds_health_status") == "HEALTHY"
                    and not h.get("health_status", {}).get("failed_active_health_check")
                    for h in hosts
                ):
                    return
        time.sleep(0.2)
    child.stop(timeout=2)
    raise StartError(f"{child.name}: cluster {cluster} never became healthy")


def start_cinema_serve(
    service: str, env: Mapping[str, str], log_dir: pathlib.Path, name: str | None = None
) -> Child:
    """``cinema serve SERVICE`` on a free loopback port (``env`` adds to os.environ).

    Events are off unless ``env`` turns them on (``CINEMA_EVENTS=on`` and a ``NATS_URL``,
    as ``bench.events`` does): the other benchmarks measure calls, and a service must not
    publish into whatever NATS happens to listen on the default port."""
    full_env = {
        **os.environ,
        "CINEMA_EVENTS": "off",
        **env,
        "CINEMA_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    label = name or service
    child = spawn(
        label,
        [tool("cinema"), "serve", service, "--host", "127.0.0.1", "--port", "0"],
        log_dir / f"{label}.log",
        full_env,
    )
    child.port = int(_wait_for_log(child, r"listening on port (\d+)", 60).group(1))
    _wait_for_log(child, r"is SERVING", 60)
    return child


# --- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class PostgresDatabases:
    """Fresh databases on a loopback PostgreSQL server, dropped by :meth:`drop`."""

    server_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    prefix: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:8]}")
    created: list[str] = field(default_factory=list)

    def _admin(self) -> Any:
        return pg.connect(self.server_url, autocommit=True)

    def url(self, name: str) -> str:
        """The SQLAlchemy URL of database ``<prefix>_<name>``."""
        url = make_url(check_database_url(self.server_url))
        return url.set(database=f"{self.prefix}_{name}").render_as_string(hide_password=False)

    def create(self, names: Sequence[str]) -> dict[str, str]:
        """Create ``<prefix>_<name>`` for each name; answer name -> URL."""
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                for name in names:
                    database = f"{self.prefix}_{name}"
                    cursor.execute(f'CREATE DATABASE "{database}"')
                    self.created.append(database)
        finally:
            connection.close()
        return {name: self.url(name) for name in names}

    def drop(self) -> None:
        """Drop every database this object created (connections are terminated)."""
        if not self.created:
            return
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                for database in self.created:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            connection.close()
        self.created.clear()

    def sessions_opened(self) -> float:
        """Connections ever opened to this object's databases (``pg_stat_database``).

        The statistics collector flushes about once a second, so the count lags a little.
        """
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname LIKE %s",
                    (f"{self.prefix}%",),
                )
                row = cursor.fetchone()
                return float(row[0]) if row else 0.0
        finally:
            connection.close()

    def server_version(self) -> str:
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                row = cursor.fetchone()
                return str(row[0]) if row else "?"
        finally:
            connection.close()


@contextlib.contextmanager
def postgres_databases(
    names: Sequence[str], server_url: str | None = None
) -> Iterator[tuple[PostgresDatabases, dict[str, str]]]:
    """Fresh databases for ``names``, dropped when the block ends."""
    databases = PostgresDatabases(server_url) if server_url else PostgresDatabases()
    try:
        urls = databases.create(names)
        yield databases, urls
    finally:
        databases.drop()


# --- cinema up -------------------------------------------------------------------------------


@dataclass
class CinemaUp:
    """``cinema up`` on free ports, until :meth:`stop`."""

    child: Child
    port: int
    admin_port: int
    data_dir: pathlib.Path
    #: Seconds from spawning ``cinema up`` to its "Cinema is up" line.
    startup_seconds: float = math.nan

    @classmethod
    def start(
        cls,
        data_dir: pathlib.Path,
        *,
        replicas: int,
        database_urls: Mapping[str, str],
        env: Mapping[str, str],
        timeout: float = 120.0,
    ) -> CinemaUp:
        """Start the system and wait for its "Cinema is up" line."""
        port, admin_port = free_port(), free_port()
        argv = [
            tool("cinema"), "up", "--port", str(port), "--admin-port", str(admin_port),
            "--replicas", str(replicas), "--data-dir", str(data_dir),
        ]  # fmt: skip
        for service, url in database_urls.items():
            argv += ["--database-url", f"{service}={url}"]
        started = time.monotonic()
        child = spawn(
            f"cinema-up-r{replicas}",
            argv,
            data_dir.parent / f"cinema-up-r{replicas}-{data_dir.name}.log",
            {**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        )
        _wait_for_log(child, r"Cinema is up on", timeout)
        child.port = port
        return cls(child, port, admin_port, data_dir, time.monotonic() - started)

    def state(self) -> dict[str, Any]:
        """``state.json``: pid and port of every process."""
        return dict(json.loads((self.data_dir / "state.json").read_text()))

    def pids(self) -> dict[str, int]:
        """name -> pid of the launcher and every process it started."""
        pids = {"launcher": self.child.pid}
        for entry in self.state().get("processes", []):
            if entry.get("pid"):
                pids[str(entry["name"])] = int(entry["pid"])
        return pids

    def replica_port(self, name: str) -> int:
        """The port of a replica by name (``movie-1``)."""
        for entry in self.state().get("processes", []):
            if entry.get("name") != name:
                continue
            # ``ports`` (a list) in newer state files, ``port`` in older ones.
            ports = entry.get("ports") or [entry.get("port")]
            if ports and ports[0]:
                return int(ports[0])
        raise StartError(f"no replica {name} with a port in {self.data_dir / 'state.json'}")

    def stop(self) -> None:
        """SIGTERM to ``cinema up``, which stops everything it started."""
        self.child.stop(timeout=30)
