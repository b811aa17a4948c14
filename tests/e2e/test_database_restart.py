"""PostgreSQL restarted under load: calls answer UNAVAILABLE (HTTP 503) while it is down,
never INTERNAL; no service process exits; calls succeed again within 5 s of its return.

The server is a throwaway cluster this module makes (Debian's PostgreSQL binaries, as the
unprivileged ``postgres`` user when the tests run as root, on a free port), because the
shared server on 5432 cannot be restarted under everybody else's tests.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import RunningSystem, start_system, stop_system
from tests.support.processes import free_port


def _bindir() -> pathlib.Path:
    found = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"))
    if not found:
        pytest.fail("no PostgreSQL binaries: scripts/ensure-postgres installs Debian's package")
    return found[-1]


@dataclass
class Cluster:
    """A PostgreSQL cluster of our own: start, stop, and where it listens."""

    data_dir: pathlib.Path
    port: int
    bindir: pathlib.Path

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=60)

    def pg_ctl(self, action: str) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l",
            str(self.data_dir / "server.log"), "-w", "-m", "fast",
            "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir}",
            action,
        )  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = _bindir()
    # Not under pytest's tmp dir: its parents are private to root, and the server runs as
    # the postgres user.
    root = pathlib.Path(tempfile.mkdtemp(prefix="cinema-pg-restart-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if os.getuid() == 0:
        subprocess.run(["id", "postgres"], check=True, capture_output=True)
        shutil.chown(root, "postgres")
        shutil.chown(data_dir, "postgres")
    made = Cluster(data_dir, free_port(), bindir)
    made._run(str(bindir / "initdb"), "-D", str(data_dir), "-U", "postgres", "-A", "trust",
              "-E", "UTF8")  # fmt: skip
    made.pg_ctl("start")
    try:
        yield made
    finally:
        made.pg_ctl("stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def system(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    # The launcher creates the four databases (the role may).
    env = {f"{s.upper()}_DATABASE_URL": cluster.url(f"restart_{s}")
           for s in ("movie", "cast", "user", "order")}  # fmt: skip
    running = start_system(tmp_path_factory.mktemp("pg-restart"), replicas=1, extra_env=env)
    try:
        yield running
    finally:
        assert stop_system(running) == []


def test_a_database_restart_is_unavailable_meanwhile_and_heals_by_itself(
    system: RunningSystem, cluster: Cluster
) -> None:
    pids = {name: system.pids(name) for name in ("movie", "cast", "user", "order")}
    stop = threading.Event()
    outcomes: Counter[int] = Counter()
    last_failure = [0.0]

    def read() -> None:
        while not stop.is_set():
            status = system.request("GET", "/api/v1/movies?pageSize=5").status
            outcomes[status] += 1
            if status != 200:
                last_failure[0] = time.monotonic()
            time.sleep(0.02)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        time.sleep(1.0)
        cluster.pg_ctl("stop")
        time.sleep(2.0)
        cluster.pg_ctl("start")
        back = time.monotonic()
        # Calls must succeed again within 5 s of the server's return.
        deadline = back + 5.0
        while time.monotonic() < deadline:
            if system.request("GET", "/api/v1/movies?pageSize=5").status == 200:
                break
            time.sleep(0.1)
        recovered = time.monotonic() - back
        time.sleep(1.0)  # and keep succeeding
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert recovered < 5.0, f"still failing {recovered:.1f}s after PostgreSQL came back"
    assert set(outcomes) <= {200, 503}, f"only success or UNAVAILABLE: {dict(outcomes)}"
    assert outcomes[503] > 0, "the outage was seen (the test really stopped the server)"
    assert last_failure[0] - back < 5.0
    assert {name: system.pids(name) for name in pids} == pids, "no service process exited"
