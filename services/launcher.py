"""``cinema up``: the whole system on one machine.

Envoy in front, every service with ``--replicas`` processes (``cinema serve``), the gateway
sidecar, all on 127.0.0.1 except the public port. The launcher

* keeps its state in ``--data-dir``: one SQLite file per service (unless database URLs
  are given), the JWT signing keys (made on first start), logs, the rendered Envoy config;
  data survives a restart;
* learns each child's port from its first log lines (children bind port 0), so two
  systems on one machine never race for ports; Envoy gets a dynamic base id;
* on PostgreSQL (database URLs given), connects to each database first and creates one
  that does not exist yet when the role may; otherwise it says which database is missing
  and the command that creates it;
* waits until ``/healthz`` says every service serves, then prints where to reach it;
* when something fails to start, stops what did start and ends on one line: the cause (read
  from the failed process's log) and the log to read; no traceback reaches the terminal;
* restarts a replica that crashes, on the same port, with a back-off;
* on SIGINT/SIGTERM stops everything it started (replicas get SIGTERM and
  ``CINEMA_GRACE_SECONDS``, the grace period the launcher passes them, then SIGKILL) and
  exits. Children also get SIGKILL if the launcher itself dies (Linux
  ``PR_SET_PDEATHSIG``), so nothing is left behind.

Its own messages go to ``logs/launcher.log`` too (JSON, as the services log), with the
detail of a start-up failure that the terminal gets in one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import getpass
import json
import logging
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from services.common import keyring
from services.common.logs import JsonFormatter
from services.common.settings import SERVICES, _Env

logger = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 10.0
# After the grace period a service still needs a moment to close its pools and exit; only
# past that does the launcher send SIGKILL.
_EXIT_MARGIN_SECONDS = 2.0
_START_TIMEOUT = 90.0
# What services.common.server and gateway.sidecar log once their ports are bound.
_SERVICE_PORT = re.compile(r"listening on port (\d+)(?:, metrics on port (\d+))?$")
_SIDECAR_PORTS = re.compile(r"serving gRPC on (\d+), /healthz on (\d+)")
_DATABASE_URL_VARIABLES = {service: f"{service.upper()}_DATABASE_URL" for service in SERVICES}


class LaunchError(RuntimeError):
    """Something did not start; the message says what and where its log is."""


class _Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the system was starting."""


def grace_seconds_from_env(environ: Mapping[str, str]) -> float:
    """``CINEMA_GRACE_SECONDS``, read and checked exactly as every service reads it
    (:mod:`services.common.settings`); SettingsError names the variable when it is bad."""
    return _Env(environ).number("CINEMA_GRACE_SECONDS", DEFAULT_GRACE_SECONDS, low=0.0)


def sigkill_delay(grace_seconds: float) -> float:
    """How long after SIGTERM the launcher waits before it SIGKILLs a child: the services'
    grace period for calls in flight, plus a margin for their exit."""
    return grace_seconds + _EXIT_MARGIN_SECONDS


# Envoy's own log lines: "[2026-01-02 03:04:05.678][123][critical][main] [file:1] text".
_ENVOY_LINE = re.compile(r"^\[[^\]]*\]\[\d+\]\[(\w+)\]\[[\w-]+\] (?:\[[^\]]*\] )?(.*)$")


def failure_cause(lines: Sequence[str], *, records_only: bool = False) -> str | None:
    """The line of a log that says why its process stopped, in one line; None if none does.

    That is the last record at ERROR or above (JSON, as the services and the sidecar log,
    or Envoy's own format), else (unless ``records_only``) the last line that is not a log
    record at all (what a process printed on its way out: ``cinema: configuration error:
    ...`` or the last line of a traceback).
    """
    for raw in reversed(lines):
        line = raw.rstrip()
        if not line.strip() or line.startswith((" ", "\t", "(Background on this error")):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            if "level" not in record or "message" not in record:
                continue  # a JSON record that is no log line (the sidecar's ports)
            if str(record["level"]).upper() in ("ERROR", "CRITICAL"):
                return " ".join(str(record["message"]).split())
            continue
        envoy = _ENVOY_LINE.match(line)
        if envoy:
            if envoy.group(1) in ("error", "critical"):
                return " ".join(envoy.group(2).split())
            continue
        if not records_only:
            return " ".join(line.split())
    return None


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
    #: Stopped after every other child has exited (the trace store).
    stop_last: bool = False
    _port_seen: threading.Event = field(default_factory=threading.Event)
    _log_copied: threading.Event = field(default_factory=threading.Event)
    _log_start: int = 0

    def start(self) -> None:
        self._port_seen.clear()
        self._log_copied.clear()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:  # where this run's lines begin (the log keeps those of earlier runs)
            self._log_start = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_start = 0
        argv = list(self.argv)
        env = self.env
        if self.ports and "--port" in argv:
            argv[argv.index("--port") + 1] = str(self.ports[0])  # a restart keeps its port
        if len(self.ports) > 1 and env is not None:  # ... and its metrics port (file_sd)
            env = {**env, "CINEMA_METRICS_ADDR": f"127.0.0.1:{self.ports[1]}"}
        self.process = subprocess.Popen(
            argv,
            env=env,
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
        try:
            with self.log_path.open("ab") as log:
                for raw in self.process.stdout:
                    log.write(raw)
                    log.flush()
                    if self.ports_pattern and not self._port_seen.is_set():
                        self._parse_ports(raw.decode(errors="replace"))
        finally:
            self._log_copied.set()

    def _parse_ports(self, line: str) -> None:
        assert self.ports_pattern is not None
        try:
            message = str(json.loads(line).get("message", ""))
        except (json.JSONDecodeError, AttributeError):
            message = line
        found = self.ports_pattern.search(message)
        if found:
            self.ports = tuple(int(group) for group in found.groups() if group is not None)
            self._port_seen.set()

    def wait_ports(self, timeout: float, stopping: threading.Event) -> tuple[int, ...]:
        """The ports the child logged once bound; LaunchError if it dies or takes too long,
        _Interrupted when ``stopping`` is set meanwhile."""
        deadline = time.monotonic() + timeout
        while not self._port_seen.wait(0.1):
            if stopping.is_set():
                raise _Interrupted
            if not self.alive():
                raise LaunchError(self.failure("did not start"))
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{self.name} did not start: no port after {timeout:.0f}s; see {self.log_path}"
                )
        return self.ports

    def _recent_lines(self) -> list[str]:
        """This run's lines of the log (its last 64 KiB at most)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(self._log_start, log.seek(0, os.SEEK_END) - 64 * 1024))
                return log.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def logged_error(self) -> str | None:
        """The last ERROR this run of the child logged, in one line."""
        return failure_cause(self._recent_lines(), records_only=True)

    def failure(self, what: str) -> str:
        """One line: ``{name} {what}: {cause}; see {log}``, the cause read from its log."""
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)  # and so its last lines reach the log
        self._log_copied.wait(timeout=2)
        code = self.process.poll() if self.process is not None else None
        cause = failure_cause(self._recent_lines())
        if cause is None and code is not None and code < 0:
            cause = f"killed by {signal.Signals(-code).name}"
        elif cause is None:
            cause = f"exit status {code}" if code is not None else "no reason in its log"
        return f"{self.name} {what}: {cause}; see {self.log_path}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    #: Run a local trace store and send every span to it (``cinema up --traces``).
    traces: bool = False


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


def rate_limits_from_env(environ: Mapping[str, str]) -> bool:
    """``CINEMA_RATE_LIMITS``: ``on`` (the default) or ``off``, Envoy's per-client limits
    on sign-in and sign-up (``gateway.envoy_config.RATE_LIMITS``). Tests that register many
    users from 127.0.0.1 turn them off."""
    value = environ.get("CINEMA_RATE_LIMITS", "on").strip().lower()
    if value not in ("on", "off"):
        raise LaunchError(f"CINEMA_RATE_LIMITS must be on or off, got {value!r}")
    return value == "on"


def database_urls_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``MOVIE_DATABASE_URL`` and friends: when given, that service runs on that database."""
    return {
        service: environ[variable]
        for service, variable in _DATABASE_URL_VARIABLES.items()
        if environ.get(variable)
    }


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def ensure_database(service: str, url: str) -> str | None:
    """Make sure the PostgreSQL database of ``url`` answers; create it when it does not
    exist and the role may. What was done, for the terminal (None: nothing to do).

    LaunchError, in one line, when the database does not answer: the cause, and for a
    database the role may not create, the command that creates it.
    """
    from sqlalchemy import exc

    try:
        return _ensure_database(service, url)
    except (exc.ArgumentError, exc.InvalidRequestError, ImportError) as error:
        # Not a URL, or a driver that is not installed (or not a synchronous one).
        logger.debug("database URL of %s", service, exc_info=True)
        reason = str(error).split(" (Background on this error")[0]
        raise LaunchError(f"the {service} database URL cannot be used: {reason}") from None


def _ensure_database(service: str, url: str) -> str | None:
    from sqlalchemy import create_engine, exc, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    def describe(error: exc.DBAPIError) -> str:
        # Imported only on a failure: the module brings grpc along.
        from services.common.server import describe_database_error

        return describe_database_error(error)

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    connect_args: dict[str, Any] = {}
    if (
        parsed.get_driver_name() in ("psycopg2", "psycopg")
        and "connect_timeout" not in parsed.query
    ):
        connect_args["connect_timeout"] = 10
    name = parsed.database or ""

    def connect(database: str | None) -> Any:
        engine = create_engine(
            parsed.set(database=database),
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args=connect_args,
        )
        return engine.connect()

    try:
        connect(name).close()
        return None
    except exc.DBAPIError as error:
        if not name or f'database "{name}" does not exist' not in str(error.orig):
            logger.debug("database of %s does not answer", service, exc_info=True)
            raise LaunchError(
                f"the {service} database does not answer ({_masked(url)}): {describe(error)}"
            ) from None
    role = parsed.username or _os_user()
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    problem: exc.DBAPIError | None = None
    for maintenance in ("postgres", "template1"):  # a role may connect to one of them
        try:
            with connect(maintenance) as connection:
                quoted = connection.dialect.identifier_preparer.quote(name)
                connection.execute(text(f"CREATE DATABASE {quoted}"))
        except exc.DBAPIError as error:
            state = _sqlstate(error)
            if state == "42P04":  # duplicate_database: another launcher made it meanwhile
                return None
            problem = error
            if state == "42501":  # insufficient_privilege: the role may not create it
                break
            continue  # this maintenance database refused us: try the next
        logger.info("created database %s for %s on %s", name, service, where)
        return f"  created database {name} for {service} on {where}"
    assert problem is not None
    logger.debug("could not create database %s", name, exc_info=problem)
    host = f"-h {parsed.host} " if parsed.host else ""
    port = f"-p {parsed.port} " if parsed.port else ""
    raise LaunchError(
        f'the {service} database "{name}" does not exist on {where} and role "{role}" '
        f"may not create it ({describe(problem)}); create it with: "
        f"createdb {host}{port}-U postgres -O {role} {name}"
    )


def _os_user() -> str:
    """The role libpq connects as when the URL names none."""
    try:
        return os.environ.get("PGUSER") or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return "ROLE"


def _sqlstate(error: Any) -> str | None:
    orig = getattr(error, "orig", None)
    # psycopg2 says pgcode, psycopg (3) sqlstate.
    state = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return str(state) if state else None


def _unset(environ: Mapping[str, str], name: str) -> bool:
    """Whether ``name`` is unset or empty: what the services' settings take for unset."""
    return not environ.get(name, "").strip()


class System:
    """Everything ``cinema up`` starts, in start order."""

    def __init__(self, options: Options, out: IO[str] = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.data_dir = options.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        #: Where the user service writes its mail when no mail server is set (CINEMA_MAIL_URL).
        self.mail_dir = self.data_dir / "mail"
        self.log_path = self.logs / "launcher.log"
        self.children: list[Child] = []
        self._otlp_port: int | None = None
        self._nats_url = ""
        self.stopping = threading.Event()
        self._lock_file: IO[str] | None = None
        self._log_handler: logging.Handler | None = None
        self._reserved: list[socket.socket] = []

    # -- start ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)
        if text.strip():  # the first line is enough for the log (the banner is long)
            logger.info("%s", text.strip().splitlines()[0])

    def _lock_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = (self.data_dir / "cinema-up.lock").open("w")
        except OSError as error:
            raise LaunchError(f"cannot use --data-dir {self.data_dir}: {error.strerror}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise LaunchError(
                f"{self.data_dir} is used by another `cinema up`; give this one its own "
                "--data-dir (and --port, --admin-port)"
            ) from None
        # Only now: the launcher's log must not go into another system's data directory.
        self.logs.mkdir(parents=True, exist_ok=True)
        self._log_handler = logging.FileHandler(self.log_path)
        self._log_handler.setFormatter(JsonFormatter("launcher"))
        logger.addHandler(self._log_handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False

    def _reserve_ports(self) -> None:
        """Hold Envoy's public and admin ports from the start until Envoy binds them.

        The children bind port 0, and the kernel may hand one of them a port named by
        ``--port`` or ``--admin-port`` while it is still free (a test that picked a free port
        for each met that: Envoy could not bind its admin port, taken by a replica). A socket
        listening on each port keeps the kernel from choosing it, and a port already taken
        is one line now, before anything has started.
        """
        wanted = [
            ("--port", self.options.listen_address, self.options.port),
            ("--admin-port", "127.0.0.1", self.options.admin_port),
        ]
        for flag, address, port in wanted:
            reservation = socket.socket(
                socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM
            )
            # As Envoy does: connections of a system that just stopped, still in TIME_WAIT,
            # do not make the port busy. A listening socket still blocks every other bind.
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                reservation.bind((address, port))
                reservation.listen(1)
            except OSError as error:
                reservation.close()
                self._release_ports()
                raise LaunchError(
                    f"{flag} {port}: cannot listen on {address}:{port} ({error.strerror}); "
                    f"choose another {flag}; see {self.log_path}"
                ) from None
            self._reserved.append(reservation)

    def _release_ports(self) -> None:
        for reservation in self._reserved:
            reservation.close()
        self._reserved.clear()

    def _close_log(self) -> None:
        if self._log_handler is not None:
            logger.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _prepare_databases(self) -> None:
        """Connect to every PostgreSQL database first: a missing one is created (when the
        role may), any other problem is one line here, before anything has started."""
        for service, url in self.options.database_urls.items():
            try:
                done = ensure_database(service, url)
            except LaunchError as error:
                raise LaunchError(f"{error}; see {self.log_path}") from None
            if done:
                self.say(done)

    def _service_env(self, service: str, keys: pathlib.Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.endswith("DATABASE_URL")
            and not k.startswith(("CINEMA_JWT_PUBLIC_KEY", "CINEMA_JWT_PRIVATE_KEY"))
        }
        env.update(
            {
                # The services and the launcher's SIGKILL delay follow the same value.
                "CINEMA_GRACE_SECONDS": str(self.options.grace_seconds),
                "CINEMA_DATA_DIR": str(self.data_dir / "db"),
                # The key ring: every service follows it, `cinema keys rotate` changes it.
                "CINEMA_JWT_KEYS_DIR": str(keys),
                "CINEMA_GATEWAY_ADDR": f"127.0.0.1:{self.options.port}",
                "CINEMA_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # Registration links: files a person can open, unless the environment names a
        # mail server; the links lead to this system's front door.
        defaults = {
            "CINEMA_MAIL_URL": f"file://{self.mail_dir}",
            "CINEMA_PUBLIC_URL": f"http://localhost:{self.options.port}",
        }
        for variable, value in defaults.items():
            if _unset(env, variable):
                env[variable] = value
        for variable in ("CAST_SERVICE_ADDR", "MOVIE_SERVICE_ADDR", "USER_SERVICE_ADDR"):
            env.pop(variable, None)  # peers go through this system's own gateway
        env["NATS_URL"] = self._nats_url
        if self._otlp_port is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{self._otlp_port}"
        if service in self.options.database_urls:
            env["DATABASE_URL"] = self.options.database_urls[service]
        return env

    def _start_trace_store(self, cinema: str) -> int:
        """``cinema trace-store`` on a free loopback port; the port. It stops last."""
        store = Child(
            name="trace-store",
            argv=[cinema, "trace-store", "--data-dir", str(self.data_dir), "--port", "0",
                  "--log-format", "json"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            log_path=self.logs / "trace-store.log",
            ports_pattern=_SERVICE_PORT,
            stop_last=True,
        )  # fmt: skip
        self.children.append(store)
        store.start()
        (port,) = store.wait_ports(_START_TIMEOUT, self.stopping)
        self.say(f"  started trace-store on 127.0.0.1:{port} (spans in {self.data_dir}/traces)")
        return port

    def _start_broker(self) -> str:
        """The NATS URL the services use: ``NATS_URL`` when set, else a ``nats-server``
        of this run's (JetStream store in the data dir; it stops after the services)."""
        given = os.environ.get("NATS_URL", "").strip()
        if given:
            self.say(f"  using NATS at {given} (NATS_URL)")
            return given
        from services.common.events import broker

        store = self.data_dir / "nats"
        nats = Child(
            name="nats",
            argv=broker.server_argv(store),
            env=dict(os.environ),
            log_path=self.logs / "nats.log",
            ports_pattern=broker.LISTENING,
            stop_last=True,
        )
        self.children.append(nats)
        nats.start()
        (port,) = nats.wait_ports(_START_TIMEOUT, self.stopping)
        self.say(f"  started nats     on 127.0.0.1:{port} (JetStream, events in {store})")
        return f"nats://127.0.0.1:{port}"

    def _envoy_otlp_port(self) -> int | None:
        """Where Envoy sends its spans: the local trace store, or the port of a loopback
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` the services export to as well."""
        if self._otlp_port is not None:
            return self._otlp_port
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        found = re.fullmatch(r"(?:https?://)?(?:127\.0\.0\.1|localhost):(\d+)/?", endpoint)
        return int(found.group(1)) if found else None

    def start(self) -> None:
        from gateway import envoy_config

        self._lock_data_dir()
        self._reserve_ports()
        keys = self.data_dir / "keys"
        keyring.ensure_ring(keys)
        cinema = str(pathlib.Path(sys.executable).parent / "cinema")
        backend = "PostgreSQL" if self.options.database_urls else "SQLite"
        self.say(
            f"Starting Cinema ({self.options.replicas} replicas per service, {backend}, "
            f"data in {self.data_dir})"
        )
        self._prepare_databases()
        self._otlp_port = self._start_trace_store(cinema) if self.options.traces else None
        self._nats_url = self._start_broker()
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
                "--nats-url",
                self._nats_url,
                "--keys-dir",
                str(keys),
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
        scrape: list[tuple[str, str, int]] = []
        for service, child in replicas:
            port, *metrics_port = child.wait_ports(_START_TIMEOUT, self.stopping)
            ports.setdefault(service, []).append(port)
            scrape += [(service, child.name, p) for p in metrics_port]
            self.say(f"  started {child.name:<8} on 127.0.0.1:{port}")
        grpc_port, http_port = sidecar.wait_ports(_START_TIMEOUT, self.stopping)
        topology = envoy_config.local_topology(
            ports,
            sidecar_grpc_port=grpc_port,
            sidecar_http_port=http_port,
            listen_address=self.options.listen_address,
            listen_port=self.options.port,
            admin_port=self.options.admin_port,
            otlp_port=self._envoy_otlp_port(),
        )
        config_path = self.data_dir / "envoy.yaml"
        try:
            rendered = envoy_config.render(
                topology,
                balancing=balancing_from_env(os.environ),
                rate_limits=rate_limits_from_env(os.environ),
            )
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
        self._release_ports()  # the children are bound: nothing of ours binds port 0 now
        envoy.start()
        self._write_scrape_targets(scrape)
        self._wait_healthy()
        self._write_state()

    def _write_scrape_targets(self, services: Sequence[tuple[str, str, int]]) -> None:
        """A Prometheus ``file_sd`` list of every /metrics this run serves, Envoy's too, and
        a prometheus.yml that reads it: ``prometheus --config.file=DATA_DIR/prometheus/
        prometheus.yml`` scrapes the whole system."""
        directory = self.data_dir / "prometheus"
        directory.mkdir(exist_ok=True)
        targets: list[dict[str, Any]] = [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {"job": "cinema", "service": service, "replica": replica},
            }
            for service, replica, port in services
        ]
        targets.append(
            {
                "targets": [f"127.0.0.1:{self.options.admin_port}"],
                "labels": {"job": "envoy", "__metrics_path__": "/stats/prometheus"},
            }
        )
        (directory / "targets.json").write_text(json.dumps(targets, indent=2) + "\n")
        (directory / "prometheus.yml").write_text(
            "# Written by `cinema up`: scrape every process it started.\n"
            "global:\n  scrape_interval: 5s\n"
            "scrape_configs:\n"
            "  - job_name: cinema\n"
            "    file_sd_configs:\n"
            f"      - files: [{json.dumps(str((directory / 'targets.json').resolve()))}]\n"
        )

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
            if self.stopping.is_set():
                raise _Interrupted
            for child in self.children:
                if not child.alive():
                    raise LaunchError(child.failure("exited while starting"))
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
                problem = f"the system did not become healthy in {_START_TIMEOUT:.0f}s "
                problem += f"({summary or 'gateway not answering'})"
                for child in self.children:  # a process that logged an error says why
                    error = child.logged_error()
                    if error:
                        raise LaunchError(f"{problem}; {child.name}: {error}; see {child.log_path}")
                raise LaunchError(f"{problem}; logs in {self.logs}")
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
        mail = (
            f"{self.mail_dir} (registration links, one .eml file each)"
            if _unset(os.environ, "CINEMA_MAIL_URL")
            else "sent through CINEMA_MAIL_URL"
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
                f"  mail:    {mail}",
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
                delay = min(2 ** min(child.restarts, 5) * 0.5, 15.0)
                self.say(f"{child.failure('exited')}; restarting in {delay:.1f}s")
                if self.stopping.wait(delay):
                    return
                child.restarts += 1
                child.start()
                self._write_state()

    def stop(self) -> None:
        """SIGTERM to everything (gateway first, so no new calls arrive), then SIGKILL to
        whatever still runs ``sigkill_delay`` later."""
        self.stopping.set()
        self._release_ports()
        # The trace store last: the services send their last spans as they stop.
        order = [c for c in reversed(self.children) if not c.stop_last]
        order += [c for c in reversed(self.children) if c.stop_last]
        for child in order:
            if not child.stop_last:
                child.signal(signal.SIGTERM)
        began = time.monotonic()
        deadline = began + sigkill_delay(self.options.grace_seconds)
        for child in order:
            if child.stop_last:
                child.signal(signal.SIGTERM)
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time: SIGKILL", child.name)
                child.signal(signal.SIGKILL)
                child.process.wait(timeout=5)
            logger.debug("%s has exited (%.2fs)", child.name, time.monotonic() - began)
        if self._lock_file is not None:  # only the system holding the lock owns the state
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "state.json").unlink()
            self._lock_file.close()
            self._lock_file = None


def run(options: Options) -> int:
    """Start the system, serve until SIGINT/SIGTERM, stop it. The exit status of ``up``.

    A start-up failure stops what did start and then ends the output on one line: the
    cause and the log to read. A stop ends on "Cinema stopped".
    """
    system = System(options)

    def on_signal(signum: int, _frame: object) -> None:
        system.stopping.set()

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    failure: str | None = None
    stopped = False
    try:
        try:
            system.start()
            system.say(system.banner())
            system.supervise()
        except LaunchError as error:
            failure = str(error)
        except _Interrupted:
            pass
        except OSError as error:  # the data directory, the keys: say what, not a traceback
            logger.debug("cinema up failed", exc_info=True)
            failure = str(error) + (f"; see {system.log_path}" if system.log_path.exists() else "")
        if failure is None:
            system.say("\nStopping Cinema...")
        began = time.monotonic()
        system.stop()
        stopped = True
        if failure is not None:
            logger.error("%s", failure)
            print(f"cinema up: {failure}", file=sys.stderr, flush=True)
            return 1
        system.say(f"Cinema stopped ({time.monotonic() - began:.1f}s)")
        return 0
    finally:
        if not stopped:  # an unexpected error: still leave nothing behind
            system.stop()
        system._close_log()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def parse_database_urls(values: Sequence[str]) -> dict[str, str]:
    """``SERVICE=URL`` pairs from ``--database-url``."""
    urls: dict[str, str] = {}
    for value in values:
        service, sep, url = value.partition("=")
        if not sep or service not in SERVICES or not url:
            raise ValueError(f"--database-url takes SERVICE=URL with SERVICE in {SERVICES}")
        urls[service] = url
    return urls
