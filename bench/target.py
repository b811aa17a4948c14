"""Where load may go: loopback addresses only.

A load run sends thousands of requests per second. This workplace (and plain decency)
allows that only against servers on this machine, so every target is checked before the
first request: ``127.0.0.0/8``, ``::1`` or the name ``localhost``. No name is resolved
through DNS, which could point anywhere.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy.engine import make_url


class TargetError(ValueError):
    """A target that is malformed or not on loopback."""


@dataclass(frozen=True)
class Target:
    """A loopback ``host:port``."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port`` as gRPC wants it (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP literal."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_target(text: str) -> Target:
    """``HOST:PORT`` (or ``[::1]:PORT``) on loopback, else :class:`TargetError`."""
    value = text.strip()
    for prefix in ("http://", "dns:///", "ipv4:", "ipv6:"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    value = value.rstrip("/")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            raise TargetError(f"malformed target {text!r}")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise TargetError(f"target {text!r} needs HOST:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"target {text!r} has no valid port")
    if not is_loopback_host(host):
        raise TargetError(
            f"refusing target {text!r}: load goes to loopback only (127.0.0.0/8, ::1, localhost)"
        )
    return Target(host.strip("[]"), int(port_text))


def check_database_url(url: str) -> str:
    """``url`` unchanged when its host is loopback (or a local socket/SQLite file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    host = parsed.host
    if host is not None and host != "" and not is_loopback_host(host):
        raise TargetError(f"refusing database host {host!r}: loopback only")
    return url
