"""nginx in front of the baseline apps: the config, rendered here, and the process.

The config is what a team puts in front of FastAPI in production, on loopback only:

* ``worker_processes 2`` on this 2-core machine, i.e. ``auto``: one worker per core, which
  is what Cinema's Envoy runs by default (``--concurrency`` defaults to the number of
  cores, and ``cinema up`` does not set it), so each proxy gets the same parallelism.
* ``upstream`` blocks with ``keepalive 32`` idle connections kept per worker, and on each
  proxied location ``proxy_http_version 1.1`` and ``proxy_set_header Connection ""``:
  without those two nginx opens a new upstream connection per request.
* ``keepalive_requests`` raised on both sides, so nginx never closes a client's or an
  upstream's keep-alive connection in the middle of a run (the default is 1,000 requests;
  Envoy does not close either). uvicorn's keep-alive timeout is set above nginx's upstream
  ``keepalive_timeout`` (:data:`UPSTREAM_KEEPALIVE_TIMEOUT`), so uvicorn never closes an idle
  connection nginx is about to reuse.
* ``access_log off`` (Cinema's Envoy writes an access log; the baseline is given the
  cheaper choice), errors to a file in the work dir, no ``Server`` version.
* Temp paths, pid file and logs in the work dir; ``daemon off`` and ``master_process on``
  so the runner owns the master and nginx needs nothing outside the work dir. Run as root
  (as these machines run), workers would drop to ``nobody``, who may not enter a work dir
  made by ``tempfile``/pytest (mode 0700), so the config says ``user root`` then.

Debian's package is ``nginx`` (``apt-get install -y nginx``).
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from bench.processes import StartError

#: Debian's package that provides /usr/sbin/nginx.
APT_PACKAGE = "nginx"
#: nginx's idle keep-alive timeout towards the apps; uvicorn's must be longer.
UPSTREAM_KEEPALIVE_TIMEOUT = 60
#: Idle keep-alive connections to each app, per nginx worker.
UPSTREAM_KEEPALIVE = 32
_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True)
class NginxLayout:
    """What the config routes where. Every address must be on loopback."""

    listen_port: int
    #: location prefix -> (upstream name, app port)
    routes: Mapping[str, tuple[str, int]]
    work_dir: pathlib.Path
    workers: int | str = "auto"
    host: str = "127.0.0.1"
    run_as_root: bool = False


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"nginx for the benchmark listens on loopback only, not {host}")


def render(layout: NginxLayout) -> str:
    """The nginx.conf text for ``layout``."""
    _check_loopback(layout.host)
    work = layout.work_dir
    lines = [
        "# Rendered by bench/baselines/nginx.py; loopback only.",
        *(["user root;"] if layout.run_as_root else []),
        f"worker_processes {layout.workers};",
        "daemon off;",
        "master_process on;",
        f"pid {work / 'nginx.pid'};",
        f"error_log {work / 'logs' / 'nginx-error.log'} warn;",
        "",
        "events {",
        "    worker_connections 4096;",
        "}",
        "",
        "http {",
        "    access_log off;",
        "    server_tokens off;",
        "    default_type application/json;",
        "    keepalive_timeout 75s;",
        "    keepalive_requests 1000000;",
        "    client_max_body_size 1m;",
        *(f"    {name}_temp_path {work / 'temp' / name};" for name in _TEMP_DIRS),
        "",
    ]
    upstreams: dict[str, int] = {}
    for upstream, port in layout.routes.values():
        if upstreams.setdefault(upstream, port) != port:
            raise ValueError(f"upstream {upstream} given two ports")
    for upstream, port in upstreams.items():
        lines += [
            f"    upstream {upstream} {{",
            f"        server {layout.host}:{port};",
            f"        keepalive {UPSTREAM_KEEPALIVE};",
            "        keepalive_requests 1000000;",
            f"        keepalive_timeout {UPSTREAM_KEEPALIVE_TIMEOUT}s;",
            "    }",
            "",
        ]
    lines += [
        "    server {",
        f"        listen {layout.host}:{layout.listen_port} backlog=4096;",
        "        server_name _;",
    ]
    for prefix, (upstream, _) in layout.routes.items():
        lines += [
            f"        location {prefix} {{",
            f"            proxy_pass http://{upstream};",
            "            proxy_http_version 1.1;",
            '            proxy_set_header Connection "";',
            "            proxy_set_header Host $host;",
            "        }",
        ]
    lines += [
        "        location / {",
        '            return 404 \'{"code": 5, "message": "no route", "details": []}\';',
        "        }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def binary() -> str:
    """The nginx executable, or a clear error naming the package."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise StartError(
            f"nginx is not installed: the baseline needs Debian's {APT_PACKAGE!r} package "
            f"(apt-get install -y {APT_PACKAGE})"
        )
    return found


def prepare(layout: NginxLayout) -> pathlib.Path:
    """Write the config and make its directories; answer the config's path."""
    work = layout.work_dir
    for name in _TEMP_DIRS:
        (work / "temp" / name).mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    config = work / "nginx.conf"
    config.write_text(render(layout))
    return config


def argv(nginx: str, layout: NginxLayout, config: pathlib.Path) -> list[str]:
    """The command line: prefix and error log in the work dir, not /var/log/nginx."""
    work = layout.work_dir
    return [nginx, "-p", str(work), "-e", str(work / "logs" / "nginx-error.log"), "-c", str(config)]


def worker_pids(master_pid: int) -> list[int]:
    """Pids of the processes whose parent is ``master_pid`` (nginx's workers)."""
    children: list[int] = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == master_pid:
            children.append(int(entry.name))
    return sorted(children)


def running_as_root() -> bool:
    return os.geteuid() == 0
