"""The one definition of Cinema's Envoy gateway; both Envoy configs are rendered from it.

``render(topology)`` turns a :class:`Topology` (where Envoy listens and where the replicas
are) into an Envoy bootstrap as a dict; ``dump_yaml`` writes it out. Two topologies exist:

* the containers' one (:func:`container_topology`): services found by DNS
  (``movie:50051`` resolves to every replica of a compose service), rendered into
  ``envoy.yaml`` at the repository root, which the image ships;
* a local one (:func:`local_topology`) that ``cinema up`` builds from the loopback ports of the
  replicas it started.

Everything else (filters, routes, retries, timeouts, health checks, error bodies) is the same
code for both, so the two configs cannot drift apart. ``python -m gateway.envoy_config``
rewrites ``envoy.yaml``; ``--check`` fails when it is stale (CI runs it).

What the gateway does, in request order:

1. The buffer filter caps request bodies at :data:`MAX_REQUEST_BYTES` (413).
2. The gRPC-JSON transcoder turns ``/api/v1/...`` JSON calls into gRPC calls on the
   ``/cinema.v1.XService/Method`` path, and gRPC errors back into JSON with the mapped HTTP
   status. Unknown paths (404) and unknown query parameters (400) are refused here.
3. Routing happens on the gRPC path, so JSON and native gRPC share one route per RPC; each
   route carries the retry policy that RPC can bear (see :func:`retry_class`).
4. Replies Envoy makes itself (no route, no healthy upstream, timeout, body too large) become
   ``{"code", "message", "details"}`` JSON for JSON clients; gRPC clients keep Envoy's
   trailers-only reply with a proper ``grpc-status``.

Reflection, the aggregate ``grpc.health.v1.Health`` and ``GET /healthz`` are answered by the
gateway sidecar (:mod:`gateway.sidecar`), which shares Envoy's network namespace because it
reads Envoy's admin API, bound to loopback only.
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
import pathlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml
from google.protobuf import descriptor, descriptor_pool

# Importing the generated modules registers the contracts in the default descriptor pool,
# which is where the RPC list below comes from.
from cinema.v1 import cast_pb2, movie_pb2, order_pb2, user_pb2  # noqa: F401
from gateway import http_bindings
from services.common import handled_calls

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ENVOY_YAML = REPO_ROOT / "envoy.yaml"
#: The descriptor set that ``tools/protogen.py`` writes; a local Envoy reads it from here.
REPO_DESCRIPTOR_SET = REPO_ROOT / "gen" / "descriptors" / "cinema.binpb"
#: Where the Dockerfile puts the descriptor set in the image.
CONTAINER_DESCRIPTOR_SET = "/etc/cinema/cinema.binpb"

#: Service key (the Envoy cluster name and compose service name) -> gRPC service.
SERVICES: Mapping[str, str] = MappingProxyType(
    {
        "movie": "cinema.v1.MovieService",
        "cast": "cinema.v1.CastService",
        "user": "cinema.v1.UserService",
        "order": "cinema.v1.OrderService",
    }
)

LISTEN_PORT = 8080
ADMIN_PORT = 9901
#: The port every service container listens on (``cinema serve SERVICE --port 50051``).
CONTAINER_SERVICE_PORT = 50051
#: Defaults of the sidecar's two ports; in containers they live in Envoy's network namespace.
SIDECAR_GRPC_PORT = 9902
SIDECAR_HTTP_PORT = 9903
SIDECAR_GRPC_CLUSTER = "gateway_sidecar_grpc"
SIDECAR_HTTP_CLUSTER = "gateway_sidecar_http"

#: Largest request body accepted, JSON or gRPC: well above any Cinema request.
MAX_REQUEST_BYTES = 1024 * 1024
#: Longest a call may take, retries included; a client's shorter ``grpc-timeout`` wins.
REQUEST_TIMEOUT = "15s"
#: One attempt of a repeatable call; a hung replica costs this much before the retry.
PER_TRY_TIMEOUT = "5s"
NUM_RETRIES = 2
#: Longest a client may take to send one whole request (the slow-body limit).
DOWNSTREAM_REQUEST_TIMEOUT = "60s"
#: How long a new client connection may take to send its first bytes.
FIRST_BYTES_TIMEOUT = "10s"
#: How long a client connection with no request in flight stays open.
DOWNSTREAM_IDLE_TIMEOUT = "60s"
#: Concurrent calls on one client HTTP/2 connection.
MAX_STREAMS_PER_CONNECTION = 100

#: Envoy's worker threads (``--concurrency``). Envoy's default is one per CPU it sees,
#: which on the two-core machines Cinema runs on (Envoy beside the Python replicas, or a
#: container on a big host that sees every core) spreads a few connections over threads
#: that mostly wake each other up. One worker batches more work per wake-up: against the
#: echo stub on two cores (``python -m bench.envoy_ab workers=auto current``, 20 A/B pairs,
#: closed loop of 32) Envoy's CPU per JSON call fell 22 % (209 -> 178 us, lower in 19 of 20
#: pairs) and per gRPC call 6 % (156 -> 148 us, 15 of 20), latency unchanged. One worker
#: tops out at one core, several thousand calls per second, well above what the Python
#: replicas behind it serve; raise it when Envoy's worker thread nears a full core.
CONCURRENCY = 1


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client address: ``burst`` calls at once, then ``per_minute``."""

    burst: int
    per_minute: int


#: The calls a guesser or a bot repeats, limited per client address (the peer address Envoy
#: sees: use_remote_address). A person signs in or registers a few times a minute at most;
#: 20 guesses in a burst from one address get 429 / RESOURCE_EXHAUSTED from the 11th on.
#: ``CINEMA_RATE_LIMITS=off`` (tests that register many users from 127.0.0.1) turns them off.
RATE_LIMITS: Mapping[str, RateLimit] = MappingProxyType(
    {
        "/cinema.v1.UserService/Login": RateLimit(burst=10, per_minute=10),
        "/cinema.v1.UserService/CreateUser": RateLimit(burst=5, per_minute=5),
        # A link is followed once or twice; its 256-bit token cannot be guessed anyway.
        "/cinema.v1.UserService/VerifyEmail": RateLimit(burst=10, per_minute=10),
        # A client refreshes once per access token (5 minutes); guessing tokens needs many.
        "/cinema.v1.UserService/RefreshToken": RateLimit(burst=20, per_minute=20),
    }
)
#: Client addresses whose buckets Envoy keeps per limited route (least recently used go).
RATE_LIMIT_CLIENTS = 10000

#: Set on every call to a service: see services/common/context.py (CALL_ID_METADATA).
CALL_ID_HEADER = "x-cinema-call-id"

BUFFER_FILTER = "envoy.filters.http.buffer"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
ROUTER_FILTER = "envoy.filters.http.router"

_GRPC_REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    # grpcio-reflection answers v1alpha only; newer clients try v1 first and fall back on
    # UNIMPLEMENTED, which the sidecar's server answers for an unknown service.
    "/grpc.reflection.v1.ServerReflection/",
)
_GRPC_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class Discovery(enum.Enum):
    """How Envoy finds a service's replicas."""

    #: Fixed IP addresses (``cinema up``: loopback ports of the replicas it started).
    STATIC = "STATIC"
    #: Host names re-resolved every 5 seconds (Envoy's default), every address returned
    #: being a replica: compose's DNS answers a service name with the IPs of all its
    #: containers, so `--scale` and restarts are picked up without a config change.
    STRICT_DNS = "STRICT_DNS"


class Balancing(enum.Enum):
    """How Envoy picks the replica of a service for each call (the cluster's ``lb_policy``).

    Every policy balances per request, not per connection, and only over the replicas
    that pass their health checks and are not ejected.
    """

    #: Each replica in turn: equal shares, whatever each replica is busy with.
    ROUND_ROBIN = "ROUND_ROBIN"
    #: A replica picked at random: equal shares on average, no shared state.
    RANDOM = "RANDOM"
    #: The one with fewer calls in flight of :data:`LEAST_REQUEST_CHOICES` replicas picked
    #: at random ("power of two choices"): a replica that is slow for the moment (a heavy
    #: call, a busy core, a pause) gets fewer new calls until it catches up.
    LEAST_REQUEST = "LEAST_REQUEST"


#: Replicas compared per pick under :attr:`Balancing.LEAST_REQUEST` (Envoy's default).
LEAST_REQUEST_CHOICES = 2

#: The policy of every service unless :data:`BALANCING` says otherwise. Least request:
#: with two identical echo replicas on two cores it kept the shares even (50/50) and gave
#: a lower p99 than round robin in 7 of 8 A/B pairs (30 vs 36 ms) at no cost in Envoy CPU,
#: because a replica that the scheduler holds back for a moment gets fewer calls; with one
#: replica slowed down (niceness 5) it sent that one 39 % of the calls, with p99 56 vs 60 ms.
#: Starved harder (niceness 10, its share 31 %) p50 fell but p99 rose (150 vs 98 ms): the
#: calls it still gets wait longer. ``python -m bench.envoy_ab balancing=ROUND_ROBIN
#: balancing=LEAST_REQUEST --replicas 2 [--slow-replica N] --scenarios grpc``.
DEFAULT_BALANCING = Balancing.LEAST_REQUEST

#: Service key -> how Envoy balances calls over that service's replicas. This is the
#: setting: change a service's entry here (and rewrite envoy.yaml) to change its policy.
BALANCING: Mapping[str, Balancing] = MappingProxyType({key: DEFAULT_BALANCING for key in SERVICES})


def balancing_policies(
    overrides: Mapping[str, Balancing | str] | None = None,
) -> Mapping[str, Balancing]:
    """:data:`BALANCING` with ``overrides`` (service key -> policy or its name) applied.

    Unknown services and unknown policy names are refused, so a typo cannot silently fall
    back to a default.
    """
    policies = dict(BALANCING)
    for key, value in (overrides or {}).items():
        if key not in SERVICES:
            raise ValueError(f"balancing: unknown service {key!r}; known: {sorted(SERVICES)}")
        if isinstance(value, Balancing):
            policies[key] = value
            continue
        try:
            policies[key] = Balancing(str(value).upper())
        except ValueError:
            choices = ", ".join(policy.value for policy in Balancing)
            raise ValueError(
                f"balancing: {key!r} has unknown policy {value!r}; choose one of {choices}"
            ) from None
    return MappingProxyType(policies)


@dataclass(frozen=True)
class Endpoint:
    """One address of a service: an IP literal (STATIC) or a DNS name (STRICT_DNS)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("endpoint host is empty")
        _check_port(self.port, f"endpoint {self.host}")


@dataclass(frozen=True)
class Topology:
    """Where Envoy listens and where every service's replicas are.

    ``endpoints`` maps each key of :data:`SERVICES` to its replicas' addresses. The sidecar
    always listens on loopback next to Envoy, so only its ports are given.
    """

    endpoints: Mapping[str, tuple[Endpoint, ...]]
    discovery: Discovery
    descriptor_set: str
    sidecar_grpc_port: int = SIDECAR_GRPC_PORT
    sidecar_http_port: int = SIDECAR_HTTP_PORT
    listen_address: str = "0.0.0.0"  # noqa: S104 - the gateway is the public entry point
    listen_port: int = LISTEN_PORT
    admin_port: int = ADMIN_PORT
    #: Where Envoy sends its spans (OTLP/gRPC); None: no tracing.
    otlp: Endpoint | None = None
    #: Share of client requests Envoy starts a trace for; the services follow its choice.
    trace_sampling_percent: float = 100.0

    def __post_init__(self) -> None:
        endpoints = {key: tuple(value) for key, value in self.endpoints.items()}
        if set(endpoints) != set(SERVICES):
            raise ValueError(
                f"topology must name exactly the services {sorted(SERVICES)}, "
                f"got {sorted(endpoints)}"
            )
        for key, replicas in endpoints.items():
            if not replicas:
                raise ValueError(f"service {key!r} has no endpoints")
            if self.discovery is Discovery.STATIC:
                for endpoint in replicas:
                    if not _is_ip(endpoint.host):
                        raise ValueError(
                            f"STATIC discovery needs IP addresses, {key!r} has {endpoint.host!r}"
                        )
        if not _is_ip(self.listen_address):
            raise ValueError(f"listen_address must be an IP address, got {self.listen_address!r}")
        for name in ("sidecar_grpc_port", "sidecar_http_port", "listen_port", "admin_port"):
            _check_port(getattr(self, name), name)
        # Freeze the mapping too, so a Topology can be shared without surprises.
        object.__setattr__(self, "endpoints", MappingProxyType(endpoints))


def container_topology(descriptor_set: str = CONTAINER_DESCRIPTOR_SET) -> Topology:
    """The topology of ``docker-compose.yml``: each service by its compose name on 50051.

    ``descriptor_set`` exists so tests can validate this config against the repository's
    descriptor set; ``envoy.yaml`` always uses the image's path.
    """
    return Topology(
        endpoints={key: (Endpoint(key, CONTAINER_SERVICE_PORT),) for key in SERVICES},
        discovery=Discovery.STRICT_DNS,
        descriptor_set=descriptor_set,
        # docker-compose.yml's Jaeger all-in-one takes OTLP/gRPC on 4317.
        otlp=Endpoint("jaeger", 4317),
    )


def local_topology(
    service_ports: Mapping[str, Sequence[int]],
    *,
    sidecar_grpc_port: int,
    sidecar_http_port: int,
    listen_address: str = "127.0.0.1",
    listen_port: int = LISTEN_PORT,
    admin_port: int = ADMIN_PORT,
    descriptor_set: str | pathlib.Path = REPO_DESCRIPTOR_SET,
    host: str = "127.0.0.1",
    otlp_port: int | None = None,
    trace_sampling_percent: float = 100.0,
) -> Topology:
    """A topology of replicas listening on ``host`` (loopback), as ``cinema up`` runs them.

    ``service_ports`` maps every key of :data:`SERVICES` to the ports of its replicas,
    for example ``{"movie": [50051, 50052], "cast": [...], ...}``.
    """
    return Topology(
        endpoints={
            key: tuple(Endpoint(host, port) for port in ports)
            for key, ports in service_ports.items()
        },
        discovery=Discovery.STATIC,
        descriptor_set=str(descriptor_set),
        sidecar_grpc_port=sidecar_grpc_port,
        sidecar_http_port=sidecar_http_port,
        listen_address=listen_address,
        listen_port=listen_port,
        admin_port=admin_port,
        otlp=None if otlp_port is None else Endpoint("127.0.0.1", otlp_port),
        trace_sampling_percent=trace_sampling_percent,
    )


# --- Retries -------------------------------------------------------------------------------


class RetryClass(enum.Enum):
    """What Envoy may do when an attempt fails.

    Retrying on ``reset`` or on ``UNAVAILABLE`` re-sends a call the application may already
    have carried out, so it is only for calls whose repetition is harmless.
    """

    #: Reads, and the writes a service recognises when they come again (an idempotency
    #: key, or its record of the call: :data:`REPEATABLE_WRITES`): retried on any transport
    #: failure, on ``UNAVAILABLE``, and when an attempt exceeds :data:`PER_TRY_TIMEOUT`.
    REPEATABLE = "unavailable,reset,connect-failure,refused-stream"
    #: Everything else (today: an RPC this config does not know yet): retried only when
    #: the request provably never reached the application (connection refused, HTTP/2
    #: REFUSED_STREAM, or reset before Envoy sent it). A duplicate Create would make two
    #: resources; a repeated Delete or Update would answer NOT_FOUND or overwrite a newer
    #: change although the first attempt succeeded.
    UNSENT_ONLY = "connect-failure,refused-stream,reset-before-request"


@dataclass(frozen=True)
class RepeatableWrite:
    """A non-read RPC that is safe to repeat, and why."""

    reason: str
    #: Field of the request that makes a repeat return the first result, if any; rendering
    #: fails when the contract loses it, rather than retrying a call that is no longer safe.
    idempotency_field: str | None = None


#: Writes that Envoy may repeat. Keyed by gRPC path.
REPEATABLE_WRITES: Mapping[str, RepeatableWrite] = MappingProxyType(
    {
        "/cinema.v1.OrderService/CreateOrder": RepeatableWrite(
            "a repeat with the same request_id returns the first order", "request_id"
        ),
        "/cinema.v1.OrderService/PayOrder": RepeatableWrite(
            "a repeat with the same request_id returns the first attempt and never charges again",
            "request_id",
        ),
        # The service finds the first resource by the gateway's call id (x-cinema-call-id,
        # set once per client call below and kept on Envoy's retries of it), or by the
        # client's own request_id when it retries across calls.
        **{
            f"/cinema.v1.{service}/Create{resource}": RepeatableWrite(
                "a repeat of one call, or with the same request_id, returns the first "
                f"{resource.lower()}",
                "request_id",
            )
            for service, resource in (
                ("MovieService", "Movie"),
                ("CastService", "Cast"),
                ("UserService", "User"),
            )
        },
        # A registration's link followed again answers the account it made the first time.
        "/cinema.v1.UserService/VerifyEmail": RepeatableWrite(
            "a repeat answers the account the first one made"
        ),
        # Login changes nothing that is stored; a repeat only signs a second token, which
        # the caller never sees. Should logins ever be counted (lockout), remove it here.
        "/cinema.v1.UserService/Login": RepeatableWrite("changes no stored state"),
        # The token a call spent, presented again by the same call (x-cinema-call-id), is a
        # lost answer, not a reuse: the service retires the tokens that answer carried and
        # gives new ones (services/user/service.py, refresh_token).
        "/cinema.v1.UserService/RefreshToken": RepeatableWrite(
            "a repeat of one call answers new tokens in place of the lost ones"
        ),
        # The service records the call id of each of these in the transaction of its
        # change (services/common/handled_calls.py); a repeat of the call finds it and
        # answers what the call answers now instead of doing it again.
        **{
            path: RepeatableWrite("a repeat of one call is answered from the record of the first")
            for path in sorted(handled_calls.RECORDED)
        },
    }
)

#: AIP standard methods that only read.
_READ_PREFIXES = ("Get", "List", "BatchGet")


def retry_class(method: descriptor.MethodDescriptor) -> RetryClass:
    """The retry class of an RPC: reads and :data:`REPEATABLE_WRITES` repeat, others don't."""
    path = grpc_path(method)
    if method.name.startswith(_READ_PREFIXES):
        return RetryClass.REPEATABLE
    write = REPEATABLE_WRITES.get(path)
    if write is None:
        return RetryClass.UNSENT_ONLY
    if write.idempotency_field and write.idempotency_field not in method.input_type.fields_by_name:
        raise ValueError(
            f"{path} is listed as repeatable because of {write.idempotency_field!r}, "
            f"but {method.input_type.full_name} has no such field"
        )
    return RetryClass.REPEATABLE


def grpc_path(method: descriptor.MethodDescriptor) -> str:
    """The HTTP/2 path of an RPC, e.g. ``/cinema.v1.MovieService/GetMovie``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def service_methods(service_key: str) -> list[descriptor.MethodDescriptor]:
    """The RPCs of one service, from the generated contracts."""
    service = descriptor_pool.Default().FindServiceByName(SERVICES[service_key])
    return list(service.methods)


# --- Rendering -----------------------------------------------------------------------------


def render(
    topology: Topology,
    *,
    balancing: Mapping[str, Balancing | str] | None = None,
    rate_limits: bool = True,
) -> dict[str, Any]:
    """The Envoy bootstrap for ``topology``, as a dict ready for YAML or JSON.

    ``balancing`` overrides :data:`BALANCING` for some services (benchmarks compare
    policies this way); the configs Cinema runs use :data:`BALANCING` as it is.
    ``rate_limits=False`` leaves out :data:`RATE_LIMITS` (tests that sign up many users
    from one address).
    """
    policies = balancing_policies(balancing)
    return {
        "node": {"id": "cinema-gateway", "cluster": "cinema-gateway"},
        # The admin API can drain listeners and dump config: never off the machine.
        "admin": {"address": _socket_address("127.0.0.1", topology.admin_port)},
        "static_resources": {
            "listeners": [_listener(topology, rate_limits=rate_limits)],
            "clusters": [
                *(
                    _service_cluster(key, topology.endpoints[key], topology, policies[key])
                    for key in SERVICES
                ),
                _sidecar_cluster(SIDECAR_GRPC_CLUSTER, topology.sidecar_grpc_port, http2=True),
                _sidecar_cluster(SIDECAR_HTTP_CLUSTER, topology.sidecar_http_port, http2=False),
                *([_otlp_cluster(topology.otlp, topology.discovery)] if topology.otlp else []),
            ],
        },
        # Without a limit Envoy accepts connections until it runs out of file descriptors.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                        ".downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
    }


def dump_yaml(config: Mapping[str, Any], *, comment: str = "") -> str:
    """``config`` as YAML, headed by a comment that says where it comes from."""
    lines = ["Generated by gateway/envoy_config.py: do not edit.", *comment.splitlines()]
    header = "".join(f"# {line}\n" for line in lines)
    return header + yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False, width=100)


class _Dumper(yaml.SafeDumper):
    """Spells out repeated parts instead of YAML anchors: the file is read by people too."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _listener(topology: Topology, *, rate_limits: bool) -> dict[str, Any]:
    return {
        "name": "gateway",
        "address": _socket_address(topology.listen_address, topology.listen_port),
        # What Envoy buffers per connection before it stops reading from it (edge guidance).
        "per_connection_buffer_limit_bytes": 32768,
        # A connection must send its first bytes within 10 s of accept, or it is closed
        # (listener.<address>.downstream_pre_cx_timeout counts them): sockets that never
        # send a byte held Envoy's whole connection budget (10,050 of them reset every new
        # client) until the idle timeout reclaimed them a minute later. The inspector only
        # peeks at those bytes (HTTP/1.1 or the HTTP/2 preface); the codec still sniffs.
        "listener_filters": [
            {
                "name": "envoy.filters.listener.http_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener"
                    ".http_inspector.v3.HttpInspector"
                },
            }
        ],
        "listener_filters_timeout": FIRST_BYTES_TIMEOUT,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": _http_connection_manager(topology, rate_limits=rate_limits),
                    }
                ]
            }
        ],
    }


def _http_connection_manager(topology: Topology, *, rate_limits: bool) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        # One port for HTTP/1.1 JSON, h2c JSON and native gRPC: the codec is sniffed.
        "codec_type": "AUTO",
        # Envoy is the edge: the peer address is the client, not a forwarded header.
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        # Clients can quote the id of their request when they report a problem.
        "always_set_request_id_in_response": True,
        # Limits on what one client can hold open (Envoy's edge-proxy guidance, tighter
        # where Cinema's calls allow it). A connection's first bytes must arrive within
        # 10 s of accept (the listener filter above), headers within 10 s of their first
        # byte; a whole request (body included: the trickled body) within 60 s, which is
        # also how long a reflection stream through the front door may stay open; a
        # connection with no request in flight closes after 60 s.
        "request_headers_timeout": "10s",
        "request_timeout": DOWNSTREAM_REQUEST_TIMEOUT,
        "stream_idle_timeout": DOWNSTREAM_REQUEST_TIMEOUT,
        "common_http_protocol_options": {"idle_timeout": DOWNSTREAM_IDLE_TIMEOUT},
        # One HTTP/2 connection may not carry more calls at once than a cluster allows
        # in total: 2,000 streams on one connection used to take everyone's budget.
        "http2_protocol_options": {
            "max_concurrent_streams": MAX_STREAMS_PER_CONNECTION,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
        "access_log": [_access_log()],
        **({"tracing": _tracing(topology)} if topology.otlp else {}),
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "cinema",
            "virtual_hosts": [
                {"name": "cinema", "domains": ["*"], "routes": _routes(rate_limits=rate_limits)}
            ],
        },
        "http_filters": [
            {
                "name": BUFFER_FILTER,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": MAX_REQUEST_BYTES,
                },
            },
            {"name": TRANSCODER_FILTER, "typed_config": _transcoder(topology)},
            # After the transcoder, so JSON and gRPC calls meet the same per-RPC limits.
            # Empty here: each limited route carries its own bucket (typed_per_filter_config).
            {
                "name": RATE_LIMIT_FILTER,
                "typed_config": {
                    "@type": _LOCAL_RATE_LIMIT_TYPE,
                    "stat_prefix": "rate_limit",
                },
            },
            {
                "name": ROUTER_FILTER,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }


def _transcoder(topology: Topology) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
        ".GrpcJsonTranscoder",
        "proto_descriptor": topology.descriptor_set,
        "services": list(SERVICES.values()),
        # Proto3 canonical JSON (lowerCamelCase names, enums as names), except that fields
        # without presence are printed at their defaults: an empty list is `"movies": []`,
        # not a missing key, so every reply of a method has the same shape. Fields with
        # presence (messages, `optional`) are still left out when unset.
        "print_options": {
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
        },
        # gRPC errors become {"code", "message", "details"} with the mapped HTTP status;
        # details need google/rpc/*.proto in the descriptor set (tools/protogen.py adds them).
        "convert_grpc_status": True,
        # Left false, the incoming route is dropped after transcoding and the request is
        # routed again on its gRPC path: one route per RPC serves JSON and gRPC alike.
        "match_incoming_request_route": False,
        "request_validation_options": {
            # A JSON path that maps to no RPC is a 404 here instead of a gRPC server
            # resetting a request it cannot parse (which would look like a 503).
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
            # Otherwise a body field silently wins over the same path variable.
            "reject_binding_body_field_collisions": True,
        },
    }


#: On a route: none of its requests is traced, whatever the sampling and the traceparent.
#: Health checks (load balancers', probes', ``cinema up`` waiting for readiness) would
#: otherwise fill the traces with polls, and ``cinema trace`` would pick a failed poll at
#: start as the latest failed call; the services start no span for them either.
_NOT_TRACED = {"tracing": {"overall_sampling": {"numerator": 0}}}


def _routes(*, rate_limits: bool = True) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = [
        *_method_not_allowed_routes(),
        *_method_not_allowed(
            "healthz", {"path": "/healthz"}, ("GET", "HEAD"), disable=(TRANSCODER_FILTER,)
        ),
        {
            "name": "healthz",
            "match": {"path": "/healthz"},
            "route": {"cluster": SIDECAR_HTTP_CLUSTER, "timeout": "5s"},
            # reject_unknown_method would answer 404 for a path no RPC binds.
            "typed_per_filter_config": _disabled(TRANSCODER_FILTER),
            **_NOT_TRACED,
        },
        *(
            {
                "name": name,
                "match": {"prefix": prefix},
                # Streams: reflection is bidirectional and Health/Watch lives as long as the
                # client wants, so no route timeout and no buffering of the request.
                "route": {"cluster": SIDECAR_GRPC_CLUSTER, "timeout": "0s"},
                "typed_per_filter_config": _disabled(BUFFER_FILTER, TRANSCODER_FILTER),
                **(_NOT_TRACED if name == "health" else {}),
            }
            for name, prefix in (
                ("reflection-v1alpha", _GRPC_REFLECTION_PREFIXES[0]),
                ("reflection-v1", _GRPC_REFLECTION_PREFIXES[1]),
                ("health", _GRPC_HEALTH_PREFIX),
            )
        ),
    ]
    for key in SERVICES:
        for method in service_methods(key):
            path = grpc_path(method)
            route: dict[str, Any] = {
                "name": path.lstrip("/"),
                "match": {"path": path},
                "route": _route_action(key, retry_class(method)),
                "request_headers_to_add": _call_id_header(),
            }
            if rate_limits and path in RATE_LIMITS:
                route["typed_per_filter_config"] = {
                    RATE_LIMIT_FILTER: _rate_limit(path, RATE_LIMITS[path])
                }
            routes.append(route)
    # An RPC this config does not know yet (a service deployed before the gateway) still
    # reaches its service, with the retry policy that is safe for anything.
    for key, service in SERVICES.items():
        routes.append(
            {
                "name": f"{service}/*",
                "match": {"prefix": f"/{service}/"},
                "route": _route_action(key, RetryClass.UNSENT_ONLY),
                "request_headers_to_add": _call_id_header(),
            }
        )
    routes += [
        {
            # Seen only when the transcoder is off: it answers every /api/ path itself, with
            # the call it maps to or a 404 (reject_unknown_method). Keeps /api/ out of the pages.
            "name": "api",
            "match": {"prefix": "/api/"},
            "direct_response": {"status": 404, "body": {"inline_string": "no such API route"}},
        },
        {
            # Everything else a browser asks for: the web pages, /docs, /openapi.json and
            # /.well-known/, served by the sidecar. A gRPC call on an unknown path still gets
            # Envoy's own 404 (UNIMPLEMENTED), not an HTML page.
            "name": "pages",
            "match": {
                "prefix": "/",
                "headers": [
                    {
                        "name": "content-type",
                        "string_match": {"prefix": "application/grpc"},
                        "invert_match": True,
                        "treat_missing_header_as_empty": True,
                    }
                ],
            },
            "route": {"cluster": SIDECAR_HTTP_CLUSTER, "timeout": "5s"},
            "typed_per_filter_config": _disabled(TRANSCODER_FILTER),
        },
    ]
    return routes


def _method_not_allowed_routes() -> list[dict[str, Any]]:
    """A 405 with ``Allow`` for each JSON path asked with a method no RPC binds to it.

    Without these the transcoder, finding no RPC for ``PUT /api/v1/movies``, answers 404,
    which tells a REST client the collection does not exist.
    """
    routes: list[dict[str, Any]] = []
    for regex, verbs in http_bindings.methods_by_path().items():
        match = {"safe_regex": {"regex": regex}}
        routes += _method_not_allowed(f"405 {regex}", match, verbs, disable=(TRANSCODER_FILTER,))
    return routes


def _method_not_allowed(
    name: str, match: Mapping[str, Any], allowed: Sequence[str], *, disable: Sequence[str]
) -> list[dict[str, Any]]:
    methods = "|".join(allowed)
    return [
        {
            "name": name,
            "match": {
                **match,
                "headers": [
                    {
                        "name": ":method",
                        "string_match": {"safe_regex": {"regex": f"^({methods})$"}},
                        "invert_match": True,
                    }
                ],
            },
            "direct_response": {
                "status": 405,
                "body": {
                    "inline_string": f"method not allowed here; allowed: {', '.join(allowed)}"
                },
            },
            "response_headers_to_add": [
                {
                    "header": {"key": "allow", "value": ", ".join(allowed)},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
            "typed_per_filter_config": _disabled(*disable),
        }
    ]


def _call_id_header() -> list[dict[str, Any]]:
    # One id per client call, the same on every retry of it, whatever the client sent:
    # the services make a repeated create return the first (RequestContext.call_id).
    # The downstream start time makes it unique even when a client reuses x-request-id.
    return [
        {
            "header": {
                "key": CALL_ID_HEADER,
                "value": "%REQ(X-REQUEST-ID)%.%START_TIME(%s.%6f)%",
            },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def _route_action(cluster: str, retries: RetryClass) -> dict[str, Any]:
    retry_policy: dict[str, Any] = {
        "retry_on": retries.value,
        "num_retries": NUM_RETRIES,
        # A retry goes to another replica when there is one.
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3"
                    ".PreviousHostsPredicate"
                },
            }
        ],
        # Least-request balancing favours a replica that died a moment ago (its calls fail
        # at once, so it has none active): a pick of two lands on it 3 times in 4. With 3
        # tries to pick another host, a retry went back to the dead one 42 % of the time
        # and a kill -9 failed calls (tests/e2e/test_faults.py, URX,UF in Envoy's log);
        # with 10, 0.75^10 = 6 %: one read failed UNAVAILABLE in 7 runs of that test at
        # about 6,500 calls each (2026-12-04; its Envoy log not kept). With 30, 0.02 %.
        # The extra picks run only on a retry and cost microseconds.
        "host_selection_retry_max_attempts": 30,
    }
    if retries is RetryClass.REPEATABLE:
        # A timed-out attempt may have been carried out: only repeatable calls get one.
        retry_policy["per_try_timeout"] = PER_TRY_TIMEOUT
    return {
        "cluster": cluster,
        # With max_stream_duration set the route `timeout` is not used: the stream limit
        # covers the whole call, retries included, and a shorter grpc-timeout from the
        # client takes its place (Envoy answers DEADLINE_EXCEEDED / 504 when it passes).
        "max_stream_duration": {
            "max_stream_duration": REQUEST_TIMEOUT,
            "grpc_timeout_header_max": REQUEST_TIMEOUT,
        },
        "retry_policy": retry_policy,
    }


_LOCAL_RATE_LIMIT_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)


def _rate_limit(path: str, limit: RateLimit) -> dict[str, Any]:
    seconds_per_token = max(1, round(60 / limit.per_minute))
    enabled = {"numerator": 100, "denominator": "HUNDRED"}
    return {
        "@type": _LOCAL_RATE_LIMIT_TYPE,
        "stat_prefix": f"rate_limit_{path.rsplit('/', 1)[-1].lower()}",
        # The route's own bucket, only there because descriptors need one; the per-client
        # descriptor below is what limits.
        "token_bucket": {
            "max_tokens": 1_000_000,
            "tokens_per_fill": 1_000_000,
            "fill_interval": "1s",
        },
        "filter_enabled": {"default_value": enabled, "runtime_key": "rate_limit_enabled"},
        "filter_enforced": {"default_value": enabled, "runtime_key": "rate_limit_enforced"},
        # The descriptor of a call is its client address; a value-less entry below is a
        # wildcard: one bucket per address seen.
        "rate_limits": [{"actions": [{"remote_address": {}}]}],
        "descriptors": [
            {
                "entries": [{"key": "remote_address"}],
                "token_bucket": {
                    "max_tokens": limit.burst,
                    "tokens_per_fill": 1,
                    "fill_interval": f"{seconds_per_token}s",
                },
            }
        ],
        "max_dynamic_descriptors": RATE_LIMIT_CLIENTS,
        # gRPC clients get RESOURCE_EXHAUSTED (not UNAVAILABLE, which they would retry).
        "rate_limited_as_resource_exhausted": True,
        "response_headers_to_add": [
            {
                "header": {"key": "retry-after", "value": str(seconds_per_token)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def _disabled(*filter_names: str) -> dict[str, Any]:
    return {
        name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
        for name in filter_names
    }


def _service_cluster(
    key: str, endpoints: Sequence[Endpoint], topology: Topology, balancing: Balancing
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": key,
        "type": topology.discovery.value,
        "connect_timeout": "1s",
        "lb_policy": balancing.value,
        **(
            {"least_request_lb_config": {"choice_count": LEAST_REQUEST_CHOICES}}
            if balancing is Balancing.LEAST_REQUEST
            else {}
        ),
        # Panic routing sends traffic to every host once fewer than half are healthy; with
        # two or three replicas that means sending to the dead ones. Use the healthy only.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "typed_extension_protocol_options": _http_protocol_options(http2=True),
        "load_assignment": {
            "cluster_name": key,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _socket_address(e.host, e.port)}}
                        for e in endpoints
                    ]
                }
            ],
        },
        "health_checks": [
            {
                # Short intervals so a killed replica leaves rotation (and /healthz says so)
                # within about two seconds, and an idle cluster is still watched.
                "timeout": "1s",
                "interval": "1s",
                "no_traffic_interval": "1s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": SERVICES[key]},
            }
        ],
        "outlier_detection": {
            # Eject a replica for failures Envoy sees itself (connection refused or reset,
            # timeouts), faster than the next health check. Errors the application returns
            # never eject: an UNAVAILABLE from movie because cast is down says nothing about
            # that movie replica, and ejecting it would spread one outage to two services.
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 2,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_time": "60s",
            # Keep at least one of two replicas in rotation whatever outlier detection thinks;
            # health checks, not ejection, take a service out entirely.
            "max_ejection_percent": 50,
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": 1024,
                    "max_pending_requests": 1024,
                    "max_requests": 1024,
                    # The default of 3 concurrent retries drops most retries under load,
                    # exactly when a replica dies; allow as many as there are requests.
                    "max_retries": 1024,
                }
            ]
        },
    }
    return cluster


OTLP_CLUSTER = "otlp"


def _tracing(topology: Topology) -> dict[str, Any]:
    return {
        # Envoy decides for a request without a sampled traceparent; the services are
        # parent-based, so the whole trace follows this choice.
        "random_sampling": {"value": topology.trace_sampling_percent},
        # A span for each upstream try beside the downstream one: retries show.
        "spawn_upstream_span": True,
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "1s"},
                "service_name": "envoy",
            },
        },
    }


def _otlp_cluster(otlp: Endpoint, discovery: Discovery) -> dict[str, Any]:
    return {
        "name": OTLP_CLUSTER,
        "type": discovery.value if not _is_ip(otlp.host) else "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _http_protocol_options(http2=True),
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(otlp.host, otlp.port)}}]}
            ],
        },
    }


def _sidecar_cluster(name: str, port: int, *, http2: bool) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _http_protocol_options(http2=http2),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address("127.0.0.1", port)}}]}
            ],
        },
    }


def _http_protocol_options(*, http2: bool) -> dict[str, Any]:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            # Close idle upstream connections well before anything between would.
            "common_http_protocol_options": {"idle_timeout": "60s"},
            # gRPC needs HTTP/2 upstream; without it Envoy speaks HTTP/1.1 and gets a 502.
            "explicit_http_config": (
                {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
            ),
        }
    }


@dataclass(frozen=True)
class LocalReply:
    """What an error reply Envoy makes itself says, in the services' own error shape."""

    #: The canonical gRPC code of the JSON body (and, for 413 and 431, of a gRPC reply).
    code: int
    #: ``google.rpc.ErrorInfo.reason``, UPPER_SNAKE as the services' reasons.
    reason: str


#: HTTP status of an Envoy-made reply -> its gRPC code and ErrorInfo reason.
LOCAL_REPLIES: Mapping[int, LocalReply] = MappingProxyType(
    {
        # Unknown query parameter, malformed JSON, a body field that collides with the path.
        400: LocalReply(3, "MALFORMED_REQUEST"),  # INVALID_ARGUMENT
        401: LocalReply(16, "UNAUTHENTICATED"),
        403: LocalReply(7, "PERMISSION_DENIED"),
        404: LocalReply(5, "NO_SUCH_ROUTE"),  # NOT_FOUND: no RPC binds this path
        405: LocalReply(12, "METHOD_NOT_ALLOWED"),  # UNIMPLEMENTED; `allow` lists the methods
        408: LocalReply(4, "REQUEST_TIMEOUT"),  # DEADLINE_EXCEEDED: the request arrived too slowly
        # RESOURCE_EXHAUSTED, as gRPC's own message size limit: body over MAX_REQUEST_BYTES.
        413: LocalReply(8, "REQUEST_TOO_LARGE"),
        429: LocalReply(8, "RATE_LIMITED"),  # RESOURCE_EXHAUSTED
        431: LocalReply(8, "HEADERS_TOO_LARGE"),  # RESOURCE_EXHAUSTED
        500: LocalReply(13, "INTERNAL"),
        501: LocalReply(12, "UNIMPLEMENTED"),
        502: LocalReply(14, "UNAVAILABLE"),
        503: LocalReply(14, "UNAVAILABLE"),  # no healthy upstream, connection refused
        504: LocalReply(4, "DEADLINE_EXCEEDED"),  # the call took longer than its deadline
    }
)
#: Statuses whose grpc-status Envoy would derive as UNKNOWN for a gRPC client.
_GRPC_STATUS_OVERRIDES = (413, 431)
_UNKNOWN = LocalReply(2, "UNKNOWN")
#: ``google.rpc.ErrorInfo.domain`` of every Cinema error (services/common/status.py).
ERROR_DOMAIN = "cinema.v1"


def _local_reply_config() -> dict[str, Any]:
    # JSON only for clients that did not speak gRPC. Envoy answers a gRPC client with a
    # trailers-only reply carrying grpc-status, and puts any body into grpc-message, so a
    # JSON body there would only garble the message. Which kind of client it was is decided
    # on the request as the client sent it, while these filters see the headers after the
    # transcoder rewrote a JSON call into gRPC (content-type application/grpc): its
    # x-envoy-original-path header marks those. No top-level body_format on purpose: it would
    # apply to gRPC replies too.
    json_client = {
        "or_filter": {
            "filters": [
                {
                    "header_filter": {
                        "header": {
                            "name": "content-type",
                            "string_match": {"prefix": "application/grpc"},
                            "invert_match": True,
                            "treat_missing_header_as_empty": True,
                        }
                    }
                },
                {
                    "header_filter": {
                        "header": {"name": "x-envoy-original-path", "present_match": True}
                    }
                },
            ]
        }
    }
    mappers: list[dict[str, Any]] = [
        {
            "filter": {"and_filter": {"filters": [_status_is("EQ", status), json_client]}},
            "body_format_override": _error_body(reply),
        }
        for status, reply in LOCAL_REPLIES.items()
    ]
    mappers.append(
        {
            "filter": {"and_filter": {"filters": [_status_is("GE", 400), json_client]}},
            "body_format_override": _error_body(_UNKNOWN),
        }
    )
    # Envoy derives a gRPC client's grpc-status from the HTTP status, and has no mapping for
    # 413 or 431 (it would say UNKNOWN); gRPC's own size limits say RESOURCE_EXHAUSTED.
    # A grpc-status set here is kept. Listed after the JSON mappers, which never match gRPC.
    mappers += [
        {
            "filter": _status_is("EQ", status),
            "headers_to_add": [
                {
                    "header": {"key": "grpc-status", "value": str(LOCAL_REPLIES[status].code)},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
        for status in _GRPC_STATUS_OVERRIDES
    ]
    return {"mappers": mappers}


def _status_is(op: str, status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": op,
                # runtime_key is mandatory in RuntimeUInt32; nothing sets it at runtime.
                "value": {"default_value": status, "runtime_key": f"local_reply.status_{status}"},
            }
        }
    }


def _error_body(reply: LocalReply) -> dict[str, Any]:
    # The same shape as the services' errors through the transcoder: google.rpc.Status in
    # proto3 JSON with an ErrorInfo, so a client reads every error the same way. The
    # metadata says which part of Envoy answered (e.g. `route_not_found`) and the request id.
    error_info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reply.reason,
        "domain": ERROR_DOMAIN,
        "metadata": {
            "envoy_details": "%RESPONSE_CODE_DETAILS%",
            "request_id": "%REQ(X-REQUEST-ID)%",
        },
    }
    return {
        "json_format": {
            "code": reply.code,
            "message": "%LOCAL_REPLY_BODY%",
            "details": [error_info],
        },
        "content_type": "application/json",
    }


def _access_log() -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3"
            ".StdoutAccessLog",
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "request_id": "%REQ(X-REQUEST-ID)%",
                    "trace_id": "%TRACE_ID%",
                    # What the client sent; for JSON calls `rpc` is the transcoded gRPC path.
                    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
                    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                    "rpc": "%REQ(:PATH)%",
                    "protocol": "%PROTOCOL%",
                    "status": "%RESPONSE_CODE%",
                    "grpc_status": "%GRPC_STATUS_NUMBER%",
                    "flags": "%RESPONSE_FLAGS%",
                    "details": "%RESPONSE_CODE_DETAILS%",
                    "duration_ms": "%DURATION%",
                    "route": "%ROUTE_NAME%",
                    "upstream_cluster": "%UPSTREAM_CLUSTER%",
                    "upstream_host": "%UPSTREAM_HOST%",
                    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                    "bytes_received": "%BYTES_RECEIVED%",
                    "bytes_sent": "%BYTES_SENT%",
                    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                    "user_agent": "%REQ(USER-AGENT)%",
                }
            },
        },
    }


def _socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_port(port: int, what: str) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"{what}: port must be 1-65535, got {port}")


# --- Command line --------------------------------------------------------------------------


def command_line_flags(concurrency: int = CONCURRENCY) -> list[str]:
    """The flags every Cinema Envoy runs with, besides ``-c`` and the logging options.

    ``cinema up``, the benchmark's Envoy and the container's command all add these, so the
    gateway measured is the gateway deployed.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return ["--concurrency", str(concurrency)]


def container_yaml() -> str:
    """The text ``envoy.yaml`` must have: the container topology, rendered."""
    return dump_yaml(
        render(container_topology()),
        comment="The containers' topology (docker-compose.yml); `python -m gateway.envoy_config`\n"
        "rewrites this file, `cinema up` renders its own topology from the same code.",
    )


def is_current(path: pathlib.Path = ENVOY_YAML) -> bool:
    """Whether ``path`` holds exactly what :func:`container_yaml` renders."""
    try:
        return path.read_text() == container_yaml()
    except FileNotFoundError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``envoy.yaml`` from the container topology, or with ``--check`` verify it."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.envoy_config",
        description="Render envoy.yaml (the container topology) from gateway/envoy_config.py.",
    )
    parser.add_argument("--check", action="store_true", help="fail when envoy.yaml is stale")
    parser.add_argument("--output", type=pathlib.Path, default=ENVOY_YAML, help="file to write")
    args = parser.parse_args(argv)
    if args.check:
        if not is_current(args.output):
            print(f"{args.output} is stale: run `python -m gateway.envoy_config`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(container_yaml())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
