"""The gateway sidecar: what Envoy routes to for the answers it cannot give itself.

* gRPC server reflection (v1alpha) for all four Cinema services, from the generated
  contracts, so ``grpcurl -plaintext localhost:8080 list`` through Envoy shows them all.
* ``grpc.health.v1.Health`` for the whole system: ``""`` and each ``cinema.v1.XService``.
* ``GET /healthz`` (plain HTTP/1.1, on a second port) as JSON: each service's status and
  replica counts, 200 when every service serves, 503 otherwise.
* On that same HTTP port, everything else Envoy routes to it (every non-gRPC path outside
  ``/api/``): the web shop at ``/``, the API explorer at ``/docs/`` and the OpenAPI document
  at ``/openapi.json``, answered by :class:`gateway.pages.Site` (see there for why and how).

Health is Envoy's own view: the sidecar reads ``/clusters?format=json`` from Envoy's admin
API. Envoy already health-checks every replica each second (``grpc.health.v1`` for
``cinema.v1.XService``) and ejects failing ones, so a service is SERVING exactly when Envoy
has a replica it would route to. Probing the replicas again from here would double the
checks and could disagree with where traffic goes. The admin API listens on loopback only,
so the sidecar runs next to Envoy: the same host locally, Envoy's network namespace in
containers (``network_mode: service:envoy``).

``python -m gateway.sidecar --help`` runs it; :func:`main` is what ``cinema`` calls and
:func:`build` what tests and in-process launchers use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import logging
import os
import pathlib
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

# Importing these registers their messages in the default descriptor pool, which reflection
# answers from: the contracts, and google.rpc's error details so grpcurl can print them.
from google.rpc import error_details_pb2, status_pb2  # noqa: F401
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cinema.v1 import cast_pb2, movie_pb2, order_pb2, user_pb2  # noqa: F401
from gateway import pages
from gateway.envoy_config import ADMIN_PORT, SERVICES, SIDECAR_GRPC_PORT, SIDECAR_HTTP_PORT
from gateway.events_health import EventsHealth
from services.common.keyring import KeyRing, SingleKey

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

#: Flags of Envoy's HostHealthStatus under which the host gets no traffic.
_UNROUTABLE_FLAGS = (
    "failed_active_health_check",
    "failed_outlier_check",
    "pending_active_hc",
    "excluded_via_immediate_hc_fail",
    "active_hc_timeout",
)
_ROUTABLE_EDS_STATUSES = ("HEALTHY", "UNKNOWN", "DEGRADED")
#: Every public key that may still verify a live access token (RFC 7517), from the ring.
JWKS_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True)
class ServiceHealth:
    """Envoy's view of one service: how many replicas it knows and would route to."""

    service: str
    replicas: int
    healthy_replicas: int

    @property
    def serving(self) -> bool:
        """Whether at least one replica gets traffic."""
        return self.healthy_replicas > 0


def read_clusters(admin_url: str, *, timeout: float = 1.0) -> Mapping[str, Any] | None:
    """Envoy's ``/clusters?format=json``, or None when the admin API does not answer.

    Blocking: call it from a thread.
    """
    try:
        with urllib.request.urlopen(  # noqa: S310 - the URL comes from our own arguments
            f"{admin_url.rstrip('/')}/clusters?format=json", timeout=timeout
        ) as response:
            document = json.load(response)
    except (OSError, urllib.error.URLError, ValueError) as error:
        logger.debug("Envoy admin API at %s did not answer: %s", admin_url, error)
        return None
    return document if isinstance(document, dict) else None


def fetch_service_health(admin_url: str, *, timeout: float = 1.0) -> list[ServiceHealth]:
    """Ask Envoy's admin API which replicas of each Cinema service are routable.

    A service Envoy does not report (or an admin API that does not answer) counts as having
    no replicas, so the answer errs towards NOT_SERVING. Blocking: call it from a thread.
    """
    return services_from_clusters(read_clusters(admin_url, timeout=timeout) or {})


def services_from_clusters(document: Mapping[str, Any]) -> list[ServiceHealth]:
    """Per-service health from the JSON of Envoy's ``/clusters?format=json``."""
    clusters = {status.get("name"): status for status in document.get("cluster_statuses", [])}
    result = []
    for key, service in SERVICES.items():
        hosts = clusters.get(key, {}).get("host_statuses", [])
        healthy = sum(1 for host in hosts if _routable(host.get("health_status", {})))
        result.append(ServiceHealth(service, replicas=len(hosts), healthy_replicas=healthy))
    return result


def _routable(health_status: Mapping[str, Any]) -> bool:
    if any(health_status.get(flag) for flag in _UNROUTABLE_FLAGS):
        return False
    return health_status.get("eds_health_status", "HEALTHY") in _ROUTABLE_EDS_STATUSES


def healthz_document(
    services: Sequence[ServiceHealth], events: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``/healthz`` body; lowerCamelCase like the rest of the JSON API. ``events`` (the
    broker's state, :mod:`gateway.events_health`) is reported, never counted: the status
    follows the services alone."""
    document: dict[str, Any] = {
        "status": "SERVING" if all(s.serving for s in services) else "NOT_SERVING",
        "services": {
            s.service: {
                "status": "SERVING" if s.serving else "NOT_SERVING",
                "healthyReplicas": s.healthy_replicas,
                "replicas": s.replicas,
            }
            for s in services
        },
    }
    if events is not None:
        document["events"] = dict(events)
    return document


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    """``/healthz``, and everything else through :meth:`gateway.pages.Site.answer`."""

    # Keep-alive: Envoy reuses its upstream connections.
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    # Envoy answers these itself on /healthz and the API; elsewhere a page says 405.
    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def do_OPTIONS(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self._discard_body()
        path = self.path.split("?", 1)[0]
        if path == "/healthz" and self.command in ("GET", "HEAD"):
            self._healthz()
            return
        if path == JWKS_PATH and self.command in ("GET", "HEAD") and self.server.keys:
            self._json(200, self.server.keys.keys().jwks(), cache="public, max-age=60")
            return
        reply = self.server.site.answer(self.command, self.path, _lower_keys(self.headers))
        self.send_response(reply.status)
        for key, value in reply.headers:
            self.send_header(key, value)
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    def _healthz(self) -> None:
        # Asked fresh on every request: /healthz must not lag behind Envoy.
        events = self.server.events.snapshot() if self.server.events is not None else None
        document = healthz_document(fetch_service_health(self.server.admin_url), events)
        self._json(200 if document["status"] == "SERVING" else 503, document, cache="no-store")

    def _json(self, status: int, document: Any, *, cache: str) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", cache)
        self.send_header("x-content-type-options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _discard_body(self) -> None:
        # A body left unread would be taken for the next request on this kept-alive
        # connection. Envoy caps bodies (1 MiB); a chunked one is not worth parsing here.
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        # Envoy's access log already records every request; keep these for debugging only.
        logger.debug("http %s: " + format, self.address_string(), *args)


def _lower_keys(headers: Any) -> dict[str, str]:
    # The last value of each header, by its lower-case name (an email.message.Message).
    return {str(key).lower(): str(value) for key, value in headers.items()}


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], admin_url: str, site: pages.Site) -> None:
        super().__init__(address, _HttpHandler)
        self.admin_url = admin_url
        self.site = site
        self.events: EventsHealth | None = None
        #: The keys /.well-known/jwks.json publishes (None: no such page).
        self.keys: KeyRing | SingleKey | None = None


class _HealthStatuses(Protocol):
    """The part of grpc_health's asyncio servicer used here (grpc-stubs types only the sync one)."""

    async def set(self, service: str, status: int) -> None: ...

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse: ...

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None: ...


class _GatewayHealth:
    """``grpc.health.v1.Health`` for the whole system.

    Check and List ask Envoy before answering, so they never lag behind ``/healthz``; Watch
    streams what the poll loop publishes (at most one poll interval behind).
    """

    def __init__(
        self, statuses: _HealthStatuses, refresh: Callable[[], Awaitable[list[ServiceHealth]]]
    ) -> None:
        self._statuses = statuses
        self._refresh = refresh

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        await self._refresh()
        return await self._statuses.Check(request, context)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        services = await self._refresh()
        statuses = {s.service: SERVING if s.serving else NOT_SERVING for s in services}
        statuses[""] = SERVING if all(s.serving for s in services) else NOT_SERVING
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in statuses.items()
            }
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._statuses.Watch(request, context)


class GatewaySidecar:
    """A built sidecar: bound ports, not yet serving until :meth:`start`."""

    def __init__(
        self,
        grpc_server: grpc.aio.Server,
        grpc_port: int,
        health_servicer: _HealthStatuses,
        http_server: _HttpServer,
        admin_url: str,
        poll_interval: float,
        events: EventsHealth | None = None,
    ) -> None:
        self.grpc_port = grpc_port
        self.http_port: int = http_server.server_address[1]
        self.admin_url = admin_url
        self._grpc_server = grpc_server
        self._health = health_servicer
        self._http_server = http_server
        self._poll_interval = poll_interval
        self._http_thread: threading.Thread | None = None
        self._poller: asyncio.Task[None] | None = None
        self._admin_unreachable = False
        self._events = events
        http_server.events = events

    async def start(self) -> None:
        """Serve reflection and health over gRPC, /healthz over HTTP, and follow Envoy."""
        # NOT_SERVING until the first look at Envoy says otherwise.
        for service in ("", *SERVICES.values()):
            await self._health.set(service, NOT_SERVING)
        await self._grpc_server.start()
        self._http_thread = threading.Thread(
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="http",
            daemon=True,
        )
        self._http_thread.start()
        self._poller = asyncio.create_task(self._follow_envoy(), name="follow-envoy")
        if self._events is not None:
            self._events.start()
        # services.launcher reads the ports from this line: keep its wording.
        logger.info(
            "gateway sidecar serving gRPC on %d, /healthz on %d, reading %s",
            self.grpc_port,
            self.http_port,
            self.admin_url,
        )

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving; open reflection streams get ``grace`` seconds."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._events is not None:
            await self._events.stop()
        if self._http_thread is not None:
            await asyncio.to_thread(self._http_server.shutdown)
        self._http_server.server_close()
        await self._grpc_server.stop(grace)

    async def wait_for_termination(self) -> None:
        """Return when the gRPC server has stopped."""
        await self._grpc_server.wait_for_termination()

    async def refresh(self) -> list[ServiceHealth]:
        """Read Envoy's view once and publish it on the gRPC health service."""
        clusters = await asyncio.to_thread(read_clusters, self.admin_url)
        # Say so once when Envoy stops or starts answering, not at every poll.
        if (clusters is None) != self._admin_unreachable:
            self._admin_unreachable = clusters is None
            if self._admin_unreachable:
                logger.warning("Envoy admin API at %s does not answer", self.admin_url)
            else:
                logger.info("Envoy admin API at %s answers", self.admin_url)
        services = services_from_clusters(clusters or {})
        for service in services:
            await self._health.set(service.service, SERVING if service.serving else NOT_SERVING)
        overall = SERVING if all(s.serving for s in services) else NOT_SERVING
        await self._health.set("", overall)
        return services

    async def _follow_envoy(self) -> None:
        # Polling keeps Health/Watch streams current; /healthz asks Envoy itself each time.
        while True:
            try:
                await self.refresh()
            except Exception:
                logger.exception("could not refresh health from Envoy")
            await asyncio.sleep(self._poll_interval)


def build(
    *,
    admin_url: str,
    host: str = "127.0.0.1",
    grpc_port: int = SIDECAR_GRPC_PORT,
    http_port: int = SIDECAR_HTTP_PORT,
    poll_interval: float = 1.0,
    site: pages.Site | None = None,
    nats_url: str = "",
    keys_dir: pathlib.Path | None = None,
    public_key_file: pathlib.Path | None = None,
) -> GatewaySidecar:
    """Bind the sidecar's two ports (0 picks free ones) and return it, not yet started.

    Call it inside a running event loop (grpc.aio needs one). ``admin_url`` is Envoy's admin
    API, e.g. ``http://127.0.0.1:9901``. The bound ports are ``.grpc_port`` and ``.http_port``.
    ``site`` is what the HTTP port serves besides /healthz (default: the shop, /docs, and
    the OpenAPI document at :func:`gateway.pages.default_openapi_file`). ``nats_url``: the
    broker whose state /healthz reports (none when empty). ``keys_dir``: the key ring
    (services.common.keyring) that ``/.well-known/jwks.json`` publishes, or else
    ``public_key_file``, the one key of a deployment that does not rotate.
    """
    # A second process must not silently share the port: grpcio enables SO_REUSEPORT.
    grpc_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # Raises RuntimeError when the port is taken.
    bound_grpc_port = grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    statuses: _HealthStatuses = health.aio.HealthServicer()  # type: ignore[attr-defined]
    reflection.enable_server_reflection(
        [*SERVICES.values(), health.SERVICE_NAME, reflection.SERVICE_NAME], grpc_server
    )
    http_server = _HttpServer((host, http_port), admin_url, site or pages.Site.load())
    if keys_dir is not None:
        http_server.keys = KeyRing(keys_dir)
    elif public_key_file is not None:
        http_server.keys = SingleKey(public_key_file.read_bytes())
    events = EventsHealth(nats_url) if nats_url else None
    sidecar = GatewaySidecar(
        grpc_server, bound_grpc_port, statuses, http_server, admin_url, poll_interval, events
    )
    health_pb2_grpc.add_HealthServicer_to_server(
        _GatewayHealth(statuses, sidecar.refresh), grpc_server
    )
    return sidecar


async def serve(
    *,
    admin_url: str,
    host: str = "127.0.0.1",
    grpc_port: int = SIDECAR_GRPC_PORT,
    http_port: int = SIDECAR_HTTP_PORT,
    openapi_file: pathlib.Path | None = None,
    nats_url: str = "",
    keys_dir: pathlib.Path | None = None,
    public_key_file: pathlib.Path | None = None,
) -> None:
    """Run the sidecar until SIGTERM or SIGINT.

    Once both ports are bound, one JSON line goes to stdout, e.g.
    ``{"grpcPort": 9902, "httpPort": 9903}``, so a launcher that passed port 0 learns them.
    """
    sidecar = build(
        admin_url=admin_url,
        host=host,
        grpc_port=grpc_port,
        http_port=http_port,
        site=pages.Site.load(openapi_file=openapi_file),
        nats_url=nats_url,
        keys_dir=keys_dir,
        public_key_file=public_key_file,
    )
    await sidecar.start()
    print(json.dumps({"grpcPort": sidecar.grpc_port, "httpPort": sidecar.http_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logger.info("gateway sidecar stopping")
    await sidecar.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m gateway.sidecar [--admin-url URL] [--grpc-port N] ...``."""
    parser = argparse.ArgumentParser(
        prog="cinema gateway-sidecar",
        description=(
            "Reflection, aggregate health, /healthz, the web shop, /docs and /openapi.json "
            "for Cinema's Envoy gateway."
        ),
    )
    parser.add_argument(
        "--admin-url",
        default=f"http://127.0.0.1:{ADMIN_PORT}",
        help="Envoy's admin API (default %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--grpc-port", type=int, default=SIDECAR_GRPC_PORT, help="reflection and health (0: any)"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=SIDECAR_HTTP_PORT,
        help="/healthz, the pages, /docs and /openapi.json (0: any)",
    )
    parser.add_argument(
        "--openapi-file",
        type=pathlib.Path,
        # An environment variable too: `cinema up` starts the sidecar with its own arguments.
        default=os.environ.get("CINEMA_OPENAPI_FILE") or pages.default_openapi_file(),
        help="the OpenAPI document served at /openapi.json (default %(default)s: "
        "$CINEMA_OPENAPI_FILE, else gen/openapi/ in a checkout, /etc/cinema/ in the image)",
    )
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", ""),
        help="the NATS server whose state /healthz reports (default: $NATS_URL; none if unset)",
    )
    parser.add_argument(
        "--keys-dir",
        type=pathlib.Path,
        default=os.environ.get("CINEMA_JWT_KEYS_DIR") or None,
        help="the JWT key ring served at /.well-known/jwks.json "
        "(default: $CINEMA_JWT_KEYS_DIR; no JWKS if unset)",
    )
    parser.add_argument(
        "--public-key-file",
        type=pathlib.Path,
        default=os.environ.get("CINEMA_JWT_PUBLIC_KEY_FILE") or None,
        help="without a key ring: the one public key the JWKS publishes "
        "(default: $CINEMA_JWT_PUBLIC_KEY_FILE)",
    )
    parser.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    from services.common import logs

    logs.configure("gateway-sidecar", log_format=args.log_format, level=args.log_level.upper())
    asyncio.run(
        serve(
            admin_url=args.admin_url,
            host=args.host,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            openapi_file=args.openapi_file,
            nats_url=args.nats_url,
            keys_dir=args.keys_dir,
            public_key_file=args.public_key_file,
        )
    )
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so loggers are named gateway.sidecar, not __main__.
    from gateway.sidecar import main as _main

    sys.exit(_main())
