"""Settings: read from the environment once, validated at start, frozen afterwards.

Nothing else in Cinema reads ``os.environ``. A bad value stops the process at start with
a message that names the variable. Every variable is listed in the README.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field

SERVICES = ("movie", "cast", "user", "order")
# Only the built-in test provider ships; a real one plugs in behind the same interface.
PAYMENT_PROVIDERS = ("test",)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Argon2Parameters:
    """argon2id cost. The defaults are argon2-cffi's production parameters (RFC 9106 low-memory)."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


@dataclass(frozen=True)
class Settings:
    """Everything a service process needs to know about its surroundings."""

    service: str
    database_url: str
    data_dir: pathlib.Path
    cast_service_addr: str
    movie_service_addr: str
    user_service_addr: str
    jwt_public_key_pem: bytes | None
    jwt_private_key_pem: bytes | None
    jwt_issuer: str
    jwt_audience: str
    access_token_ttl_seconds: int
    admin_email: str | None
    admin_password: str | None
    argon2: Argon2Parameters
    grace_seconds: float
    peer_timeout_seconds: float
    db_pool_size: int
    worker_threads: int
    log_format: str
    log_level: str
    payment_provider: str = "test"
    #: ``host:port`` of the process's /metrics (port 0: any free one), or "" for none.
    metrics_address: str = "127.0.0.1:0"
    #: The NATS server (JetStream on) that events go through.
    nats_url: str = "nats://127.0.0.1:4222"
    #: Whether the service writes and handles events (``CINEMA_EVENTS=off``: neither).
    events_enabled: bool = True
    #: Replicas of the JetStream streams the services create (3 on a 3-server cluster).
    events_stream_replicas: int = 1
    #: A key ring directory (services.common.keyring) instead of the two key files.
    jwt_keys_dir: pathlib.Path | None = None
    #: How long a session (its refresh tokens) lasts at most.
    session_ttl_seconds: int = 30 * 24 * 3600
    #: Where the user service's mail goes: ``file:///DIR`` or ``smtp(s)://...``
    #: (services/user/mail.py). Holds the SMTP password when there is one.
    mail_url: str = field(default="file://cinema-data/mail", repr=False)
    #: The From of that mail.
    mail_from: str = "Cinema <cinema@localhost>"
    #: The front door's address as a person's browser reaches it, for links in mail.
    public_url: str = "http://127.0.0.1:8080"

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings of ``service`` from ``environ`` (``os.environ``)."""
        env = _Env(os.environ if environ is None else environ)
        if service not in SERVICES:
            raise SettingsError(f"unknown service {service!r}; expected one of {SERVICES}")
        data_dir = pathlib.Path(env.text("CINEMA_DATA_DIR", "cinema-data"))
        default_db = f"sqlite:///{data_dir / (service + '.db')}"
        database_url = env.text("DATABASE_URL", default_db)
        if not database_url.startswith(("sqlite:", "postgresql")):
            raise SettingsError(
                "DATABASE_URL must be a SQLAlchemy URL for SQLite (sqlite:///path) or "
                f"PostgreSQL (postgresql+psycopg2://...), got {database_url.split(':')[0]}:..."
            )
        gateway = env.text("CINEMA_GATEWAY_ADDR", "127.0.0.1:8080")
        keys_dir = env.optional("CINEMA_JWT_KEYS_DIR")
        public_key = env.pem("CINEMA_JWT_PUBLIC_KEY", required=keys_dir is None)
        private_key = env.pem(
            "CINEMA_JWT_PRIVATE_KEY", required=service == "user" and keys_dir is None
        )
        if keys_dir is not None and (public_key is not None or private_key is not None):
            raise SettingsError("set CINEMA_JWT_KEYS_DIR or the CINEMA_JWT_*_KEY files, not both")
        if keys_dir is not None and not pathlib.Path(keys_dir).is_dir():
            raise SettingsError(f"CINEMA_JWT_KEYS_DIR: {keys_dir} is not a directory")
        admin_email = env.optional("CINEMA_ADMIN_EMAIL")
        admin_password = env.optional("CINEMA_ADMIN_PASSWORD")
        if service == "user" and (admin_email is None) != (admin_password is None):
            raise SettingsError(
                "CINEMA_ADMIN_EMAIL and CINEMA_ADMIN_PASSWORD must be set together (or neither)"
            )
        # Few threads: use cases hold the GIL for most of their time, so more threads add
        # contention, not throughput (docs/benchmarks.md). One connection per thread, and
        # one for the events thread (relay and consumer).
        worker_threads = env.integer("CINEMA_WORKER_THREADS", 4, low=1)
        pool_size = env.integer("CINEMA_DB_POOL_SIZE", worker_threads + 1, low=1)
        if pool_size < worker_threads:
            raise SettingsError(
                f"CINEMA_DB_POOL_SIZE ({pool_size}) must be at least CINEMA_WORKER_THREADS "
                f"({worker_threads}): every worker thread may hold a connection"
            )
        log_format = env.text("CINEMA_LOG_FORMAT", "auto")
        if log_format not in ("auto", "json", "text"):
            raise SettingsError(f"CINEMA_LOG_FORMAT must be auto, json or text, got {log_format!r}")
        return cls(
            service=service,
            database_url=database_url,
            data_dir=data_dir,
            cast_service_addr=env.address("CAST_SERVICE_ADDR", gateway),
            movie_service_addr=env.address("MOVIE_SERVICE_ADDR", gateway),
            user_service_addr=env.address("USER_SERVICE_ADDR", gateway),
            jwt_public_key_pem=public_key,
            jwt_private_key_pem=private_key,
            jwt_issuer=env.text("CINEMA_JWT_ISSUER", "cinema"),
            jwt_audience=env.text("CINEMA_JWT_AUDIENCE", "cinema"),
            access_token_ttl_seconds=env.integer("CINEMA_ACCESS_TOKEN_TTL_SECONDS", 300, low=30),
            session_ttl_seconds=env.integer("CINEMA_SESSION_TTL_SECONDS", 30 * 24 * 3600, low=60),
            jwt_keys_dir=pathlib.Path(keys_dir) if keys_dir else None,
            admin_email=admin_email,
            admin_password=admin_password,
            argon2=Argon2Parameters(
                time_cost=env.integer("CINEMA_ARGON2_TIME_COST", 3, low=1),
                memory_kib=env.integer("CINEMA_ARGON2_MEMORY_KIB", 65536, low=8),
                parallelism=env.integer("CINEMA_ARGON2_PARALLELISM", 4, low=1),
            ),
            grace_seconds=env.number("CINEMA_GRACE_SECONDS", 10.0, low=0.0),
            peer_timeout_seconds=env.number("CINEMA_PEER_TIMEOUT_SECONDS", 5.0, low=0.05),
            db_pool_size=pool_size,
            worker_threads=worker_threads,
            log_format=log_format,
            log_level=env.text("CINEMA_LOG_LEVEL", "INFO").upper(),
            payment_provider=_payment_provider(env),
            metrics_address=_metrics_address(env),
            nats_url=_nats_url(env),
            events_enabled=_switch(env, "CINEMA_EVENTS", default=True),
            events_stream_replicas=env.integer("CINEMA_EVENTS_STREAM_REPLICAS", 1, low=1),
            mail_url=_mail_url(env, data_dir),
            mail_from=env.text("CINEMA_MAIL_FROM", "Cinema <cinema@localhost>"),
            public_url=_public_url(env, gateway),
        )


def _mail_url(env: _Env, data_dir: pathlib.Path) -> str:
    """``CINEMA_MAIL_URL``: ``file:///DIR`` (default: ``mail`` in the data directory),
    ``smtp://[USER:PASSWORD@]HOST[:PORT]`` or ``smtps://...``."""
    value = env.text("CINEMA_MAIL_URL", f"file://{(data_dir / 'mail').resolve()}")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("file", "smtp", "smtps") or not rest:
        # Not the value: it may hold the SMTP password.
        got = f"a {scheme}:// URL" if sep and scheme.isalnum() else "no such URL"
        raise SettingsError(
            "CINEMA_MAIL_URL must be file:///DIR, smtp://[USER:PASSWORD@]HOST[:PORT] or "
            f"smtps://..., got {got}"
        )
    if scheme == "file" and not rest.startswith("/"):
        raise SettingsError("CINEMA_MAIL_URL: a file:// URL needs an absolute path (file:///DIR)")
    return value


def _public_url(env: _Env, gateway: str) -> str:
    """``CINEMA_PUBLIC_URL``: what links in mail start with (default: the gateway)."""
    value = env.text("CINEMA_PUBLIC_URL", f"http://{gateway}").rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"CINEMA_PUBLIC_URL must be an http(s):// URL, got {value!r}")
    return value


def _nats_url(env: _Env) -> str:
    value = env.text("NATS_URL", "nats://127.0.0.1:4222")
    for url in value.split(","):
        scheme, sep, rest = url.strip().partition("://")
        if not sep or scheme not in ("nats", "tls") or not rest:
            raise SettingsError(
                f"NATS_URL must be nats://HOST:PORT (comma-separated), got {value!r}"
            )
    return value


def _switch(env: _Env, name: str, *, default: bool) -> bool:
    value = env.text(name, "on" if default else "off").lower()
    if value not in ("on", "off"):
        raise SettingsError(f"{name} must be on or off, got {value!r}")
    return value == "on"


def _metrics_address(env: _Env) -> str:
    """``CINEMA_METRICS_ADDR``: where /metrics listens. Loopback by default (``cinema up``
    scrapes it there); a container sets ``0.0.0.0:9464`` for a Prometheus beside it;
    ``off`` serves none and counts nothing (no metrics interceptor)."""
    value = env.text("CINEMA_METRICS_ADDR", "127.0.0.1:0")
    if value == "off":
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"CINEMA_METRICS_ADDR must be host:port or off, got {value!r}")
    return value


def _payment_provider(env: _Env) -> str:
    provider = env.text("CINEMA_PAYMENT_PROVIDER", "test")
    if provider not in PAYMENT_PROVIDERS:
        raise SettingsError(
            f"CINEMA_PAYMENT_PROVIDER must be one of {PAYMENT_PROVIDERS}, got {provider!r}"
        )
    return provider


class _Env:
    """Typed reads of environment variables that name the variable when they fail."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def integer(self, name: str, default: int, *, low: int) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < low:
            raise SettingsError(f"{name} must be at least {low}, got {value}")
        return value

    def number(self, name: str, default: float, *, low: float) -> float:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if value < low:
            raise SettingsError(f"{name} must be at least {low}, got {value}")
        return value

    def address(self, name: str, default: str) -> str:
        value = self.text(name, default)
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name} must be HOST:PORT, got {value!r}")
        return value

    def pem(self, name: str, *, required: bool) -> bytes | None:
        """A PEM key from ``NAME`` (the PEM text) or ``NAME_FILE`` (a path to it)."""
        inline = self.optional(name)
        path = self.optional(f"{name}_FILE")
        if inline and path:
            raise SettingsError(f"set {name} or {name}_FILE, not both")
        if path:
            try:
                data = pathlib.Path(path).read_bytes()
            except OSError as exc:
                raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
        elif inline:
            data = inline.encode()
        elif required:
            raise SettingsError(f"{name}_FILE (or {name}) is required: the PEM of the JWT key")
        else:
            return None
        if b"-----BEGIN" not in data:
            raise SettingsError(f"{name}: not a PEM key")
        return data
