"""The token lifecycle on `cinema up`, as a client and an operator see it: a logout is
refused by every replica of every service within 2 s, and `cinema keys rotate` changes the
signing key with no restart while old tokens keep working until they expire, then their
key leaves /.well-known/jwks.json."""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from cinema.v1 import (
    cast_pb2,
    cast_pb2_grpc,
    movie_pb2,
    movie_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from services.common import keyring
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, RunningSystem, start_system, stop_system
from tests.support.processes import tool

#: The shortest lifetime the settings allow: the rotation test waits for it to pass.
TOKEN_TTL = 30


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    system = start_system(
        tmp_path_factory.mktemp("accounts"),
        extra_env={"CINEMA_ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_TTL)},
    )
    try:
        yield system
    finally:
        assert stop_system(system) == []


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


#: One authenticated-or-public call per service: stub, method, request.
_CALLS: dict[str, tuple[Any, str, Any]] = {
    "movie": (movie_pb2_grpc.MovieServiceStub, "ListMovies", movie_pb2.ListMoviesRequest()),
    "cast": (cast_pb2_grpc.CastServiceStub, "ListCasts", cast_pb2.ListCastsRequest()),
    "order": (order_pb2_grpc.OrderServiceStub, "ListOrders", order_pb2.ListOrdersRequest()),
    "user": (user_pb2_grpc.UserServiceStub, "ListUsers", user_pb2.ListUsersRequest()),
}


def replica_calls(system: RunningSystem, token: str) -> dict[str, Callable[[], Any]]:
    """One call with ``token`` on every replica of every service, each on its own port."""
    metadata = (("authorization", f"Bearer {token}"),)
    calls: dict[str, Callable[[], Any]] = {}
    for process in system.state()["processes"]:
        name, ports = process["name"], process["ports"]
        service = name.split("-")[0]
        if service not in _CALLS or not ports:
            continue
        stub_class, method, request = _CALLS[service]
        stub = stub_class(grpc.insecure_channel(f"127.0.0.1:{ports[0]}"))
        calls[name] = functools.partial(getattr(stub, method), request, metadata=metadata)
    return calls


def test_after_logout_every_replica_refuses_the_token_within_two_seconds(
    accounts: RunningSystem,
) -> None:
    system = accounts
    login = system.request(
        "POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    ).body
    calls = replica_calls(system, login["accessToken"])
    assert len(calls) == 8  # two replicas of each of the four services
    for call in calls.values():
        call()
    out = system.request("POST", "/api/v1/auth/logout", {}, token=login["accessToken"])
    assert out.status == 200, out
    refresh = system.request(
        "POST", "/api/v1/auth/refresh", {"refreshToken": login["refreshToken"]}
    )
    assert refresh.status == 401  # at once
    started, pending = time.monotonic(), dict(calls)
    codes: dict[str, grpc.StatusCode] = {}
    while pending:
        for name, call in list(pending.items()):
            try:
                call()
            except grpc.RpcError as error:
                codes[name] = error.code()
                del pending[name]
        assert time.monotonic() - started < 2.0, f"still accepted after 2 s by {sorted(pending)}"
        time.sleep(0.02)
    assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes


def test_keys_rotate_without_restarts_and_old_keys_leave_with_their_tokens(
    accounts: RunningSystem,
) -> None:
    system = accounts
    before = system.request("GET", "/.well-known/jwks.json").body["keys"]
    old_token = system.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert [k["kid"] for k in before] == [kid_of(old_token)]
    assert (
        before[0]["kty"] == "OKP" and before[0]["crv"] == "Ed25519" and before[0]["alg"] == "EdDSA"
    )
    rotated = subprocess.run(
        [tool("cinema"), "keys", "rotate", "--data-dir", str(system.data_dir),
         "--token-ttl", str(TOKEN_TTL)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    new_kid = rotated.stdout.split()[3].rstrip(";")
    time.sleep(keyring.RELOAD_SECONDS + 0.2)  # every process looks at the ring each second
    after = [k["kid"] for k in system.request("GET", "/.well-known/jwks.json").body["keys"]]
    assert after == [new_kid, kid_of(old_token)]
    new_token = system.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert kid_of(new_token) == new_kid
    for token in (old_token, new_token):  # both verify on every replica, none restarted
        for call in replica_calls(system, token).values():
            call()
    # Once the old tokens have expired, the old key is gone from the JWKS.
    time.sleep(TOKEN_TTL + keyring.RETIRE_MARGIN_SECONDS + keyring.RELOAD_SECONDS + 0.5)
    final = [k["kid"] for k in system.request("GET", "/.well-known/jwks.json").body["keys"]]
    assert final == [new_kid]
    with pytest.raises(grpc.RpcError) as expired:
        next(iter(replica_calls(system, old_token).values()))()
    assert expired.value.code() is grpc.StatusCode.UNAUTHENTICATED
