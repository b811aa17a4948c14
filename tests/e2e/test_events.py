"""Events end to end through Envoy on ``cinema up`` (its own nats-server): what a change in
one service does to the data of the others, as a client sees it."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import RunningSystem
from tests.e2e.test_grpc_gateway import grpcurl
from tests.e2e.test_json_api import register


def eventually(check: Callable[[], Any], timeout: float) -> tuple[Any, float]:
    """``check()``'s first true value and the seconds it took."""
    started = time.monotonic()
    while True:
        value = check()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true after {timeout}s: {value!r}")
        time.sleep(0.02)


def add_movie(system: RunningSystem, token: str, title: str, cast_ids: list[str]) -> str:
    reply = system.request(
        "POST", "/api/v1/movies",
        {"title": title, "castIds": cast_ids, "price": {"currencyCode": "EUR", "amountMinor": 500}},
        token=token,
    )  # fmt: skip
    assert reply.status == 200, reply
    return str(reply.body["id"])


def test_a_deleted_cast_leaves_every_movie_within_two_seconds(
    system: RunningSystem, admin_token: str
) -> None:
    cast_ids = [
        system.request("POST", "/api/v1/casts", {"name": name}, token=admin_token).body["id"]
        for name in ("Sigourney Weaver", "Tom Skerritt")
    ]
    alien = add_movie(system, admin_token, "Alien", cast_ids)
    other = add_movie(system, admin_token, "The Dead Zone", cast_ids[1:])
    assert system.request("DELETE", f"/api/v1/casts/{cast_ids[1]}", token=admin_token).status == 200

    def dropped() -> bool:
        movies = [system.request("GET", f"/api/v1/movies/{m}").body for m in (alien, other)]
        return [m["castIds"] for m in movies] == [cast_ids[:1], []]

    _, took = eventually(dropped, 2.0)
    assert took < 2.0
    listed = system.request("GET", f"/api/v1/movies?castId={cast_ids[1]}").body
    assert listed["movies"] == []


def test_a_paid_order_fills_the_library_and_a_title_change_reaches_it(
    system: RunningSystem, admin_token: str
) -> None:
    movie = add_movie(system, admin_token, "Solaris", [])
    buyer, token = register(system, "collector")
    order = system.request(
        "POST", f"/api/v1/orders?requestId={uuid.uuid4()}",
        {"items": [{"movieId": movie, "quantity": 1}]}, token=token,
    ).body  # fmt: skip
    library = f"/api/v1/users/{buyer['id']}/owned-movies"
    assert system.request("GET", library, token=token).body == {
        "ownedMovies": [],
        "nextPageToken": "",
    }
    paid = system.request(
        "POST", f"/api/v1/orders/{order['id']}:pay",
        {"paymentToken": "tok_visa", "requestId": "pay-1"}, token=token,
    )  # fmt: skip
    assert paid.body["status"] == "ORDER_STATUS_PAID"
    owned, _ = eventually(
        lambda: system.request("GET", library, token=token).body["ownedMovies"], 2
    )
    assert [(o["movieId"], o["title"], o["orderId"]) for o in owned] == [
        (movie, "Solaris", order["id"])
    ]
    assert owned[0]["purchaseTime"] == paid.body["updateTime"]

    # The catalogue renames it: the library follows; a new price changes no paid order.
    changed = system.request(
        "PATCH", f"/api/v1/movies/{movie}",
        {"title": "Solaris (1972)", "price": {"currencyCode": "EUR", "amountMinor": 1}},
        token=admin_token,
    )  # fmt: skip
    assert changed.status == 200, changed

    def renamed() -> bool:
        body = system.request("GET", library, token=token).body
        return bool(body["ownedMovies"][0]["title"] == "Solaris (1972)")

    eventually(renamed, 2.0)
    after = system.request("GET", f"/api/v1/orders/{order['id']}", token=token).body
    assert after["total"] == {"currencyCode": "EUR", "amountMinor": "500"}

    # Someone else's library is not theirs to read; an admin's is.
    _, other = register(system, "nosy")
    assert system.request("GET", library, token=other).status == 403
    assert system.request("GET", library, token=admin_token).status == 200
    # The same through grpcurl.
    answer = grpcurl(
        "-H", f"authorization: Bearer {token}",
        "-d", json.dumps({"user_id": buyer["id"]}),
        system.address, "cinema.v1.UserService/ListOwnedMovies",
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    printed = json.loads(answer.stdout)
    assert printed["owned_movies"][0]["movie_id"] == movie, printed  # grpcurl: proto names


def test_deleting_an_account_or_a_movie_cancels_the_unpaid_orders(
    system: RunningSystem, admin_token: str
) -> None:
    movie = add_movie(system, admin_token, "Stalker", [])
    keep = add_movie(system, admin_token, "Mirror", [])
    buyer, token = register(system, "leaver")

    def order(movie_id: str) -> dict[str, Any]:
        reply = system.request(
            "POST", f"/api/v1/orders?requestId={uuid.uuid4()}",
            {"items": [{"movieId": movie_id, "quantity": 1}]}, token=token,
        )  # fmt: skip
        assert reply.status == 200, reply
        return dict(reply.body)

    def status(order_id: str) -> str:
        return str(
            system.request("GET", f"/api/v1/orders/{order_id}", token=admin_token).body["status"]
        )

    for_stalker, for_mirror, paid = order(movie), order(keep), order(keep)
    system.request(
        "POST", f"/api/v1/orders/{paid['id']}:pay",
        {"paymentToken": "tok_visa", "requestId": "pay-1"}, token=token,
    )  # fmt: skip
    assert system.request("DELETE", f"/api/v1/movies/{movie}", token=admin_token).status == 200
    eventually(lambda: status(for_stalker["id"]) == "ORDER_STATUS_CANCELLED", 2.0)
    assert status(for_mirror["id"]) == "ORDER_STATUS_PENDING"

    assert system.request("DELETE", f"/api/v1/users/{buyer['id']}", token=token).status == 200
    eventually(lambda: status(for_mirror["id"]) == "ORDER_STATUS_CANCELLED", 2.0)
    assert status(paid["id"]) == "ORDER_STATUS_PAID"  # a sale stays on the books


def test_healthz_reports_the_broker_and_the_consumers(system: RunningSystem) -> None:
    health = system.request("GET", "/healthz").body
    events = health["events"]
    assert events["broker"] == "CONNECTED"
    assert set(events["consumers"]) == {"movie", "user", "order"}
    assert events["deadLetters"] == 0


def test_a_broker_outage_delays_effects_and_loses_or_doubles_none(
    system: RunningSystem, admin_token: str
) -> None:
    """nats-server stopped (SIGSTOP: connections hang, as on a network partition) while
    casts are deleted and orders paid: the writes succeed, their effects wait, and once it
    is back every effect arrives, each event stored once in the stream."""
    (nats,) = system.pids("nats")
    casts = [
        system.request("POST", "/api/v1/casts", {"name": f"Extra {i}"}, token=admin_token).body[
            "id"
        ]
        for i in range(3)
    ]
    movie = add_movie(system, admin_token, "Partition", casts)
    buyer, token = register(system, "patient")
    orders = [
        system.request(
            "POST", f"/api/v1/orders?requestId={uuid.uuid4()}",
            {"items": [{"movieId": movie, "quantity": 1}]}, token=token,
        ).body["id"]
        for _ in range(2)
    ]  # fmt: skip
    library = f"/api/v1/users/{buyer['id']}/owned-movies"
    time.sleep(1.5)  # /healthz reads the stream once a second
    settled = int(system.request("GET", "/healthz").body["events"]["events"])
    os.kill(nats, signal.SIGSTOP)
    try:
        for cast in casts:
            assert (
                system.request("DELETE", f"/api/v1/casts/{cast}", token=admin_token).status == 200
            )
        for number, order in enumerate(orders):
            paid = system.request(
                "POST", f"/api/v1/orders/{order}:pay",
                {"paymentToken": "tok_visa", "requestId": f"pay-{number}"}, token=token,
            )  # fmt: skip
            assert paid.body["status"] == "ORDER_STATUS_PAID", paid
        time.sleep(1.5)
        assert system.request("GET", f"/api/v1/movies/{movie}").body["castIds"] == casts
        assert system.request("GET", library, token=token).body["ownedMovies"] == []
        assert system.request("GET", "/healthz").status == 200  # reads and writes go on
    finally:
        os.kill(nats, signal.SIGCONT)
    eventually(lambda: system.request("GET", f"/api/v1/movies/{movie}").body["castIds"] == [], 30)
    owned, _ = eventually(
        lambda: system.request("GET", library, token=token).body["ownedMovies"], 30
    )
    assert [o["movieId"] for o in owned] == [movie]  # two paid orders, one movie owned

    # 3 CastDeleted + 2 OrderPaid, each stored once (retries are dropped by Nats-Msg-Id).
    def stored() -> int:
        return int(system.request("GET", "/healthz").body["events"].get("events", 0)) - settled

    eventually(lambda: stored() >= 5, 10)
    time.sleep(2)  # any duplicate would have arrived by now
    assert stored() == 5
