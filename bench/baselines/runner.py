"""Start and stop the baseline (cast app, movie app, nginx) for a benchmark run or a test.

::

    baseline = start_baseline(work_dir, movie_url, cast_url, public_key_pem_path)
    try:
        target = baseline.target            # nginx, e.g. for scenarios.GetMovieJson
        watch = baseline.pids               # a bench.loadgen.WatchSource
        ...
    finally:
        baseline.stop()

:func:`start_baseline` brings both databases to Cinema's newest schema with Cinema's own
migrations, starts the cast app, then the movie app (told to reach the cast app through
nginx), then nginx, each on a free loopback port, and waits until each answers; when one
fails to start, the ones already started are stopped and :class:`bench.processes.StartError`
carries its log tail. The same seeder as Cinema's (:func:`bench.seed.seed_movies`) fills the
movie database, and :func:`bench.fixtures.ensure_casts` works against :attr:`Baseline.target`
as it does against Cinema's Envoy, since the routes and JSON are the same.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import signal
import sys
import time
from dataclasses import dataclass, field

from bench import pg
from bench.baselines import api, nginx
from bench.processes import Child, StartError, free_port, spawn, wait_http_ok
from bench.target import Target, check_database_url
from services.common.db import make_engine
from services.common.migrations import upgrade

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: Python packages the apps need at run time (the bench extra).
REQUIRED_MODULES = ("fastapi", "uvicorn", "uvloop", "httptools", "aiohttp", "asyncpg")
#: uvicorn's keep-alive outlives nginx's idle upstream connections (see bench.baselines.nginx).
UVICORN_KEEPALIVE_TIMEOUT = nginx.UPSTREAM_KEEPALIVE_TIMEOUT + 15


@dataclass
class Baseline:
    """The running baseline: nginx on :attr:`port` in front of the two apps."""

    port: int
    movie: Child
    cast: Child
    nginx: Child
    work_dir: pathlib.Path
    movie_url: str
    cast_url: str
    db_access: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def target(self) -> Target:
        """Where clients go: nginx."""
        return Target("127.0.0.1", self.port)

    def pids(self) -> dict[str, list[int]]:
        """name -> pids, for CPU accounting (usable as a ``bench.loadgen.WatchSource``):
        ``baseline-movie``, ``baseline-cast``, and ``nginx`` (master and workers)."""
        return {
            "baseline-movie": [self.movie.pid],
            "baseline-cast": [self.cast.pid],
            "nginx": [self.nginx.pid, *nginx.worker_pids(self.nginx.pid)],
        }

    def stop(self) -> None:
        """Stop nginx, then the apps; no process is left behind."""
        if self._stopped:
            return
        self._stopped = True
        _stop_nginx(self.nginx)
        self.movie.stop(timeout=15)
        self.cast.stop(timeout=15)


def migrate(movie_url: str, cast_url: str) -> None:
    """Cinema's own Alembic migrations on both databases: literally Cinema's schema."""
    for service, url in (("movie", movie_url), ("cast", cast_url)):
        engine = make_engine(check_database_url(url), pool_size=1)
        try:
            upgrade(engine, service)
        finally:
            engine.dispose()


def check_installed() -> None:
    """Raise :class:`StartError` naming what is missing (Python packages, nginx)."""
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise StartError(
            f"the baseline needs {', '.join(missing)} in this venv (the bench extra): "
            f"pip install {' '.join(missing)}"
        )
    nginx.binary()


def start_baseline(
    work_dir: pathlib.Path,
    movie_url: str,
    cast_url: str,
    public_key_pem_path: pathlib.Path,
    *,
    db_access: str | None = None,
    nginx_workers: int | str = "auto",
    timeout: float = 60.0,
) -> Baseline:
    """Migrate, then start the cast app, the movie app and nginx; wait until all answer.

    ``db_access`` picks the apps' database access (``bench.baselines.api.DB_ACCESS_CHOICES``;
    default: ``BASELINE_DB_ACCESS`` from the environment, else the measured fastest).
    """
    check_installed()
    nginx_binary = nginx.binary()
    access = db_access or os.environ.get("BASELINE_DB_ACCESS", api.DEFAULT_DB_ACCESS)
    if access not in api.DB_ACCESS_CHOICES:
        raise ValueError(f"db_access must be one of {api.DB_ACCESS_CHOICES}, not {access!r}")
    work_dir = work_dir.resolve()
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    migrate(movie_url, cast_url)
    nginx_port = free_port()
    started: list[Child] = []
    try:
        base_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "BASELINE_JWT_PUBLIC_KEY_FILE": str(public_key_pem_path.resolve()),
            "BASELINE_DB_ACCESS": access,
        }
        cast = _start_app(
            "baseline-cast",
            "bench.baselines.cast_app:create_app",
            {**base_env, "BASELINE_DATABASE_URL": check_database_url(cast_url)},
            logs,
            timeout,
        )
        started.append(cast)
        movie = _start_app(
            "baseline-movie",
            "bench.baselines.movie_app:create_app",
            {
                **base_env,
                "BASELINE_DATABASE_URL": check_database_url(movie_url),
                "BASELINE_CAST_URL": f"http://127.0.0.1:{nginx_port}",
            },
            logs,
            timeout,
        )
        started.append(movie)
        layout = nginx.NginxLayout(
            listen_port=nginx_port,
            routes={
                "/api/v1/movies": ("baseline_movie", movie.port),
                "/api/v1/casts": ("baseline_cast", cast.port),
            },
            work_dir=work_dir / "nginx",
            workers=nginx_workers,
            run_as_root=nginx.running_as_root(),
        )
        config = nginx.prepare(layout)
        proxy = spawn(
            "nginx", nginx.argv(nginx_binary, layout, config), logs / "nginx.log", dict(os.environ)
        )
        proxy.port = nginx_port
        started.append(proxy)
        for path in ("/api/v1/casts?pageSize=1", "/api/v1/movies?pageSize=1"):
            wait_http_ok(
                proxy, f"http://127.0.0.1:{nginx_port}{path}", timeout, more_log=_error_log_tail
            )
    except BaseException:
        for child in reversed(started):
            if child.name == "nginx":
                _stop_nginx(child)
            else:
                child.stop(timeout=5)
        raise
    return Baseline(nginx_port, movie, cast, proxy, work_dir, movie_url, cast_url, access)


def _start_app(
    name: str, factory: str, env: dict[str, str], logs: pathlib.Path, timeout: float
) -> Child:
    """One uvicorn process with the production options; waits for ``/healthz``."""
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", factory, "--factory",
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--no-server-header", "--log-level", "warning",
        "--timeout-keep-alive", str(UVICORN_KEEPALIVE_TIMEOUT), "--backlog", "4096",
    ]  # fmt: skip
    child = spawn(name, argv, logs / f"{name}.log", env)
    child.port = port
    wait_http_ok(child, f"http://127.0.0.1:{port}/healthz", timeout)
    return child


def _error_log_tail(child: Child) -> str:
    path = child.log_path.parent.parent / "nginx" / "logs" / "nginx-error.log"
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-20:])
    return ""


def _stop_nginx(child: Child) -> None:
    """SIGTERM to the master (fast shutdown); its workers go with it, or get SIGKILL."""
    workers = nginx.worker_pids(child.pid) if child.process.poll() is None else []
    child.stop(timeout=10)
    deadline = time.monotonic() + 5
    for pid in workers:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(OSError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return False


def movie_ids(movie_url: str, limit: int = 1000) -> list[str]:
    """Up to ``limit`` movie ids from a movie database (seeded ones first: ids sort by time)."""
    connection = pg.connect(movie_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM movies ORDER BY id LIMIT %s", (limit,))
            return [str(row[0]) for row in cursor.fetchall()]
    finally:
        connection.close()
