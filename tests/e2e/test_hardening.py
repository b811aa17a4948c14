"""Requests an attacker or a careless client makes, through Envoy: each gets a clear 4xx in
the error shape, never a 5xx, an echo of what it sent, or a hung connection."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from cinema.v1 import user_pb2, user_pb2_grpc
from gateway import envoy_config
from services.user.domain import THROTTLE_AFTER
from tests.e2e.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    RunningSystem,
    start_system,
    stop_system,
)
from tests.e2e.test_json_api import reason, violations

FLOOD_CLIENTS = 40
SILENT_SOCKETS = 200


def test_a_json_batch_get_of_a_thousand_ids_is_answered(
    system: RunningSystem, admin_token: str
) -> None:
    created = system.request(
        "POST", "/api/v1/movies",
        {"title": "Batched", "price": {"currencyCode": "EUR", "amountMinor": 100}},
        token=admin_token,
    )  # fmt: skip
    assert created.status == 200, created
    # 32-hex ids that do not exist, and one that does: a 37 KB URL, which Envoy forwards
    # to the service as metadata (x-envoy-original-path).
    ids = [f"{n:032x}" for n in range(999)] + [created.body["id"]]
    query = "&".join(f"ids={i}" for i in ids)
    reply = system.request("GET", f"/api/v1/movies:batchGet?{query}")
    assert reply.status == 200, reply.body
    assert [m["id"] for m in reply.body["movies"]] == [created.body["id"]]


def test_an_id_that_cannot_be_one_is_refused_without_being_echoed(system: RunningSystem) -> None:
    long_id = "a" * 5000
    for path in (f"/api/v1/movies/{long_id}", f"/api/v1/casts/{long_id}"):
        reply = system.request("GET", path)
        assert reply.status == 400, reply
        assert violations(reply.body)["id"].startswith("is not an id")
        assert long_id not in str(reply.body)
    batch = system.request("GET", f"/api/v1/movies:batchGet?ids={long_id}")
    assert batch.status == 400
    assert "ids[0]" in violations(batch.body)
    assert long_id not in str(batch.body)


def test_headers_over_envoys_limit_are_a_json_431(system: RunningSystem) -> None:
    # Over HTTP/1.1 Envoy answers 431, in the error shape. (An HTTP/2 client, gRPC, gets a
    # GOAWAY from Envoy's codec instead, which gRPC reports as UNAVAILABLE.)
    reply = system.request("GET", "/api/v1/movies", headers={"x-padding": "p" * 70_000})
    assert reply.status == 431
    assert reply.body["code"] == 8
    assert reason(reply.body) == "HEADERS_TOO_LARGE"


def test_a_trickled_body_does_not_hold_a_worker(system: RunningSystem) -> None:
    # Headers promise a body that never arrives in full: the connection is Envoy's to
    # time out (request_timeout), and meanwhile every other client is served.
    host, port = system.address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as slow:
        slow.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        for _ in range(20):
            assert system.request("GET", "/api/v1/movies?pageSize=1").status == 200
        assert time.monotonic() - started < 5


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed ``sock`` (without waiting for it to)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _pre_connection_timeouts(system: RunningSystem) -> int:
    """Envoy's count of connections closed for sending nothing in time."""
    url = f"http://127.0.0.1:{system.admin_port}/stats?format=json&filter=downstream_pre_cx_timeout"
    with urllib.request.urlopen(url, timeout=5) as reply:
        stats = json.load(reply)["stats"]
    return sum(int(stat.get("value", 0)) for stat in stats)


def test_connections_that_never_send_a_byte_are_closed(system: RunningSystem) -> None:
    # Idle sockets used to hold Envoy's connection budget until the idle timeout (a minute):
    # 10,050 of them reset every new client. Now one that sends nothing within the
    # first-bytes timeout is closed, and clients are served meanwhile.
    timeout = float(envoy_config.FIRST_BYTES_TIMEOUT.removesuffix("s"))
    before = _pre_connection_timeouts(system)
    host, port = system.address.split(":")
    silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(SILENT_SOCKETS)]
    try:
        opened = time.monotonic()
        assert system.request("GET", "/api/v1/movies?pageSize=1").status == 200
        while time.monotonic() - opened < timeout + 5:
            if all(_closed_by_peer(sock) for sock in silent):
                break
            time.sleep(0.2)
        waited = time.monotonic() - opened
        assert all(_closed_by_peer(sock) for sock in silent), "silent sockets still open"
        assert timeout - 1 <= waited <= timeout + 5
        assert _pre_connection_timeouts(system) - before >= SILENT_SOCKETS
        assert system.request("GET", "/api/v1/movies?pageSize=1").status == 200
    finally:
        for sock in silent:
            sock.close()


@pytest.fixture(scope="module")
def production_argon2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """A system with argon2 at its production cost (the shared one runs it light)."""
    system = start_system(
        tmp_path_factory.mktemp("argon2"),
        extra_env={
            "CINEMA_ARGON2_TIME_COST": "3",
            "CINEMA_ARGON2_MEMORY_KIB": "65536",
            "CINEMA_ARGON2_PARALLELISM": "4",
        },
    )
    try:
        yield system
    finally:
        assert stop_system(system) == []


def test_a_login_flood_does_not_starve_other_calls(production_argon2: RunningSystem) -> None:
    system = production_argon2
    admin_token = system.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    me = system.request("GET", "/api/v1/users?pageSize=1", token=admin_token)
    assert me.status == 200, me
    user_id = me.body["users"][0]["id"]
    stop = threading.Event()
    flood: Counter[int] = Counter()

    def guess() -> None:
        while not stop.is_set():
            reply = system.request(
                "POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": "wrong-guess"}
            )
            flood[reply.status] += 1

    latencies: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(FLOOD_CLIENTS) as pool:
        guessers = [pool.submit(guess) for _ in range(FLOOD_CLIENTS)]
        time.sleep(0.5)  # the flood is on
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            started = time.monotonic()
            read = system.request("GET", f"/api/v1/users/{user_id}", token=admin_token)
            latencies.append(time.monotonic() - started)
            assert read.status == 200, read
        stop.set()
        for guesser in guessers:
            guesser.result()
    # Guesses are refused as wrong (401) or as too many at once (429), never a 5xx.
    assert set(flood) <= {401, 429}, flood
    assert flood[401] > 0
    # Before admission control, GetUser took 2.4-4.1 s under 50 guessers; a bound well
    # above a normal read (a few ms) and well below that, so the test cannot flake.
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


@pytest.fixture(scope="module")
def rate_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """A system with Envoy's per-client limits on, as `cinema up` runs by default."""
    system = start_system(
        tmp_path_factory.mktemp("limited"), replicas=1, extra_env={"CINEMA_RATE_LIMITS": "on"}
    )
    try:
        yield system
    finally:
        assert stop_system(system) == []


def _login_from(
    system: RunningSystem, source: str, password: str
) -> tuple[int, dict[str, str], str]:
    """Status, headers and ErrorInfo reason of a JSON Login sent from address ``source``."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", system.port, timeout=10, source_address=(source, 0)
    )
    try:
        body = json.dumps({"email": ADMIN_EMAIL, "password": password})
        connection.request("POST", "/api/v1/auth/login", body, {"content-type": "application/json"})
        reply = connection.getresponse()
        answer = json.loads(reply.read() or b"{}")
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reason(answer)
    finally:
        connection.close()


def test_a_burst_of_guesses_from_one_address_is_rate_limited(
    rate_limited: RunningSystem,
) -> None:
    system = rate_limited
    answers = [_login_from(system, "127.0.0.1", "wrong-guess") for _ in range(20)]
    limit = envoy_config.RATE_LIMITS["/cinema.v1.UserService/Login"].burst
    # Five wrong passwords, then the account's throttle answers (the user service), then,
    # past the address's burst, Envoy's limit does.
    assert [(status, why) for status, _, why in answers] == (
        [(401, "INVALID_CREDENTIALS")] * THROTTLE_AFTER
        + [(429, "LOGIN_THROTTLED")] * (limit - THROTTLE_AFTER)
        + [(429, "RATE_LIMITED")] * (20 - limit)
    )
    refused = system.request(
        "POST", "/api/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert refused.status == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.body["code"] == 8
    assert reason(refused.body) == "RATE_LIMITED"
    with (
        grpc.insecure_channel(system.address) as channel,
        pytest.raises(grpc.RpcError) as exhausted,
    ):
        user_pb2_grpc.UserServiceStub(channel).Login(
            user_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD), timeout=10
        )
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The owner, from another address, is not locked out by the guesser: past the
    # account's short wait (Retry-After), the right password works.
    status, headers, why = _login_from(system, "127.0.0.2", ADMIN_PASSWORD)
    if status == 429:
        assert why == "LOGIN_THROTTLED"
        time.sleep(float(headers.get("retry-after", "1")))
        status = _login_from(system, "127.0.0.2", ADMIN_PASSWORD)[0]
    assert status == 200
