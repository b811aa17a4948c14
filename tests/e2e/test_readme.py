"""The README's commands run as written against `cinema up`.

Every fenced ``sh`` block of README.md runs, in order, in one new bash shell in the
repository, the way a newcomer pastes them into a second terminal while ``scripts/up``
runs in the first; the ``python`` block runs with the venv's interpreter. ``console``
blocks are commands that cannot run here (``scripts/up`` itself, a Kubernetes cluster,
the ten-minute benchmark). The only changes made to the text are the port and the data
directory: the system under test listens on a free port, not 8080, with its data in a
temporary directory, not ``cinema-data``.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import RunningSystem, start_system, stop_system

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ADMIN = re.compile(r"CINEMA_ADMIN_EMAIL=(\S+) CINEMA_ADMIN_PASSWORD='([^']+)'")


def blocks(kind: str) -> list[str]:
    """The README's fenced blocks of one kind, in order."""
    return [body for found, body in _BLOCK.findall(README.read_text()) if found == kind]


@pytest.fixture(scope="module")
def readme_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    found = _ADMIN.search(README.read_text())
    assert found, "the README shows how to start with a first admin"
    email, password = found.groups()
    system = start_system(
        tmp_path_factory.mktemp("readme"),
        extra_env={"CINEMA_ADMIN_EMAIL": email, "CINEMA_ADMIN_PASSWORD": password},
    )
    yield system
    assert stop_system(system) == []


def _new_shell_env() -> dict[str, str]:
    """A new terminal's environment: the venv is not active."""
    venv_bin = str(pathlib.Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CINEMA_")}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(path or ["/usr/bin", "/bin"])
    return env


def test_every_shell_block_runs_as_written(readme_system: RunningSystem) -> None:
    script = (
        "\n".join(blocks("sh"))
        .replace("localhost:8080", f"localhost:{readme_system.port}")
        .replace("cinema-data/", f"{readme_system.data_dir}/")
    )
    assert "grpcurl" in script and "curl" in script
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=_new_shell_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr}"
    # What a reader is told they will see.
    assert '"status": "SERVING"' in result.stdout or '"status":"SERVING"' in result.stdout
    assert '"castMembers"' in result.stdout  # the movie with its cast
    assert '"code": 3' in result.stdout or '"code":3' in result.stdout  # the bad request
    assert "PAID" in result.stdout  # the paid orders, JSON and grpcurl
    assert "CANCELLED" in result.stdout
    assert "cinema.v1.OrderService" in result.stdout  # grpcurl list


def test_the_python_block_runs_as_written(readme_system: RunningSystem) -> None:
    (source,) = blocks("python")
    result = subprocess.run(
        [sys.executable, "-c", source.replace("localhost:8080", f"localhost:{readme_system.port}")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
