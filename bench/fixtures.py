"""What scenarios need from a running system, fetched through its public API.

Tokens come from the API itself (register + login) or are minted with the system's
signing key when the caller has it (``cinema up`` keeps it in ``DATA_DIR/keys``); cast
members are listed, or created when fewer than three exist; movie ids are listed.
"""

from __future__ import annotations

import json
import pathlib
import urllib.error
import urllib.request
import uuid
from typing import Any

from bench.target import Target


class FixtureError(RuntimeError):
    """The system did not answer a set-up call as expected."""


def http_json(
    target: Target,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One JSON call to a loopback target: ``(HTTP status, parsed body)``."""
    data = None if body is None else json.dumps(body).encode()
    url = f"http://{target.address}{path}"
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            status, payload = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    try:
        return status, json.loads(payload) if payload else None
    except json.JSONDecodeError:
        return status, payload.decode(errors="replace")


def _expect(status: int, body: Any, what: str) -> Any:
    if not 200 <= status < 300:
        raise FixtureError(f"{what}: HTTP {status} {body}")
    return body


def login(target: Target, email: str, password: str) -> str:
    """An access token for ``email`` from ``POST /api/v1/auth/login``."""
    body = _expect(
        *http_json(target, "POST", "/api/v1/auth/login", {"email": email, "password": password}),
        f"login as {email}",
    )
    return str(body["accessToken"])


def register_user(target: Target, admin_token: str) -> tuple[str, str]:
    """Make a fresh user (as an admin: at once, no mailed link) and log in: ``(user id,
    access token)``."""
    email = f"bench-{uuid.uuid4().hex[:12]}@cinema.test"
    password = uuid.uuid4().hex  # a throwaway user of a throwaway database
    user = _expect(
        *http_json(
            target,
            "POST",
            "/api/v1/users",
            {"email": email, "password": password, "displayName": "Benchmark buyer"},
            token=admin_token,
        ),
        "make a user",
    )
    return str(user["id"]), login(target, email, password)


def mint_admin_token(key_dir: pathlib.Path, subject: str = "bench-admin") -> str:
    """An admin token signed with the system's signing key (the key ring in
    ``DATA_DIR/keys``, services.common.keyring)."""
    from services.common import keyring
    from services.common.auth import TokenIssuer
    from services.common.context import Role

    private_path, _ = keyring.signing_files(key_dir)
    issuer = TokenIssuer(
        private_path.read_bytes(), issuer="cinema", audience="cinema", ttl_seconds=3600
    )
    return issuer.issue(subject, Role.ADMIN).token


def ensure_casts(target: Target, admin_token: str, count: int = 3) -> tuple[str, ...]:
    """Ids of ``count`` cast members, creating the missing ones."""
    body = _expect(
        *http_json(target, "GET", f"/api/v1/casts?pageSize={count}"), "list cast members"
    )
    ids = [str(c["id"]) for c in (body or {}).get("casts", [])]
    while len(ids) < count:
        created = _expect(
            *http_json(
                target,
                "POST",
                "/api/v1/casts",
                {"name": f"Benchmark actor {len(ids) + 1}", "nationality": "Nowhere"},
                token=admin_token,
            ),
            "create a cast member",
        )
        ids.append(str(created["id"]))
    return tuple(ids[:count])
