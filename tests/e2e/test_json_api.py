"""JSON over HTTP through Envoy, as a REST client sees it: every resource, every error
status, and the register -> login -> order -> pay path."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.conftest import RunningSystem


def violations(body: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for detail in body.get("details", []):
        for violation in detail.get("fieldViolations", []):
            found[violation["field"]] = violation["description"]
    return found


def reason(body: dict[str, Any]) -> str:
    return next(
        (d["reason"] for d in body.get("details", []) if d.get("@type", "").endswith("ErrorInfo")),
        "",
    )


def register(system: RunningSystem, name: str) -> tuple[dict[str, Any], str]:
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    reply = system.register(email, password, name)
    return reply.body, system.login(email, password)


def test_casts_and_movies_crud(system: RunningSystem, admin_token: str) -> None:
    cast = system.request(
        "POST", "/api/v1/casts", {"name": "Keanu Reeves", "nationality": "Canadian"},
        token=admin_token,
    )  # fmt: skip
    assert cast.status == 200, cast
    assert cast.body["name"] == "Keanu Reeves"
    assert "createTime" in cast.body
    cast_id = cast.body["id"]

    created = system.request(
        "POST",
        "/api/v1/movies",
        {
            "title": "The Matrix",
            "plot": "Red pill.",
            "genres": ["Sci-Fi"],
            "castIds": [cast_id],
            "price": {"currencyCode": "USD", "amountMinor": 1499},
        },
        token=admin_token,
    )
    assert created.status == 200, created
    movie = created.body
    assert movie["title"] == "The Matrix"
    assert movie["price"] == {"currencyCode": "USD", "amountMinor": "1499"}

    fetched = system.request("GET", f"/api/v1/movies/{movie['id']}")
    assert fetched.status == 200
    assert fetched.body["castIds"] == [cast_id]
    full = system.request("GET", f"/api/v1/movies/{movie['id']}?view=MOVIE_VIEW_FULL")
    assert [c["name"] for c in full.body["castMembers"]] == ["Keanu Reeves"]

    listed = system.request("GET", "/api/v1/movies?pageSize=1000&genre=Sci-Fi")
    assert movie["id"] in [m["id"] for m in listed.body["movies"]]
    by_cast = system.request("GET", f"/api/v1/movies?castId={cast_id}")
    assert [m["id"] for m in by_cast.body["movies"]] == [movie["id"]]

    patched = system.request(
        "PATCH", f"/api/v1/movies/{movie['id']}?updateMask=title",
        {"title": "The Matrix (1999)", "plot": "not in the mask"}, token=admin_token,
    )  # fmt: skip
    assert patched.status == 200, patched
    assert patched.body["title"] == "The Matrix (1999)"
    assert patched.body["plot"] == "Red pill."

    cast_patch = system.request(
        "PATCH", f"/api/v1/casts/{cast_id}", {"nationality": "Canadian-American"},
        token=admin_token,
    )  # fmt: skip
    assert cast_patch.body["nationality"] == "Canadian-American"
    assert system.request("GET", f"/api/v1/casts/{cast_id}").body["name"] == "Keanu Reeves"
    # A second cast member, so a page of one has a next page whatever ran before.
    assert system.request("POST", "/api/v1/casts", {"name": "Carrie-Anne Moss"},
                          token=admin_token).status == 200  # fmt: skip
    assert system.request("GET", "/api/v1/casts?pageSize=1").body["nextPageToken"]

    deleted = system.request("DELETE", f"/api/v1/movies/{movie['id']}", token=admin_token)
    assert deleted.status == 200
    assert system.request("GET", f"/api/v1/movies/{movie['id']}").status == 404
    assert system.request("DELETE", f"/api/v1/casts/{cast_id}", token=admin_token).status == 200


def test_users_crud(system: RunningSystem, admin_token: str) -> None:
    user, token = register(system, "alice")
    assert "password" not in user
    assert user["role"] == "ROLE_USER"
    me = system.request("GET", f"/api/v1/users/{user['id']}", token=token)
    assert me.status == 200
    assert me.body["email"] == user["email"]
    renamed = system.request(
        "PATCH", f"/api/v1/users/{user['id']}?updateMask=displayName",
        {"displayName": "Alice L."}, token=token,
    )  # fmt: skip
    assert renamed.body["displayName"] == "Alice L."
    everyone = system.request("GET", "/api/v1/users?pageSize=1000", token=admin_token)
    assert user["id"] in [u["id"] for u in everyone.body["users"]]
    assert system.request("DELETE", f"/api/v1/users/{user['id']}", token=token).status == 200
    assert system.request("GET", f"/api/v1/users/{user['id']}", token=admin_token).status == 404


def test_error_statuses_are_json_with_details(system: RunningSystem, admin_token: str) -> None:
    bad = system.request(
        "POST", "/api/v1/movies", {"title": "", "price": {"currencyCode": "usd"}},
        token=admin_token,
    )  # fmt: skip
    assert bad.status == 400
    assert bad.body["code"] == 3
    assert {"movie.title", "movie.price.currency_code"} <= set(violations(bad.body))

    anonymous = system.request("POST", "/api/v1/movies", {"title": "x"})
    assert anonymous.status == 401
    assert anonymous.body["code"] == 16

    _, user_token = register(system, "mallory")
    forbidden = system.request("POST", "/api/v1/casts", {"name": "x"}, token=user_token)
    assert forbidden.status == 403
    assert forbidden.body["code"] == 7

    missing = system.request("GET", "/api/v1/movies/does-not-exist")
    assert missing.status == 404
    assert reason(missing.body) == "NOT_FOUND"

    # Registration does not tell whether an email has an account (issue 11's finding 8):
    # a known and a new address get the same status and body but for the address.
    user, _ = register(system, "dup")
    answers = []
    for address in (user["email"].upper(), f"new-{uuid.uuid4().hex[:8]}@example.com"):
        fields = {"email": address, "password": "another-password", "displayName": "d"}
        answer = system.request("POST", "/api/v1/users", fields)
        assert answer.status == 200, answer
        assert answer.body.pop("email") == address
        answers.append(answer.body)
    assert answers[0] == answers[1]
    assert answers[0]["displayName"] == "d" and answers[0]["role"] == "ROLE_USER"
    assert not answers[0].get("id") and "createTime" not in answers[0], "no account is named"
    # An admin making an account is told that the email is taken.
    duplicate = system.request(
        "POST", "/api/v1/users",
        {"email": user["email"].upper(), "password": "another-password", "displayName": "d"},
        token=admin_token,
    )  # fmt: skip
    assert duplicate.status == 409
    assert duplicate.body["code"] == 6

    no_route = system.request("GET", "/api/v1/nothing-here")
    assert no_route.status == 404
    assert isinstance(no_route.body, dict), "Envoy's own errors are JSON too"
    assert no_route.body["code"] == 5

    unknown_param = system.request("GET", "/api/v1/movies?colour=blue")
    assert unknown_param.status == 400
    assert isinstance(unknown_param.body, dict)

    malformed = system.request("POST", "/api/v1/casts", raw=b"{not json", token=admin_token)
    assert malformed.status == 400
    assert isinstance(malformed.body, dict)

    # Envoy's own errors carry the services' ErrorInfo shape, with a reason to branch on.
    for reply, expected in ((no_route, "NO_SUCH_ROUTE"), (unknown_param, "MALFORMED_REQUEST"),
                            (malformed, "MALFORMED_REQUEST")):  # fmt: skip
        assert reason(reply.body) == expected, reply.body
        (info,) = [d for d in reply.body["details"] if d["@type"].endswith("ErrorInfo")]
        assert info["domain"] == "cinema.v1"
        assert info["metadata"]["request_id"] == reply.headers["x-request-id"]


def test_json_behaves_as_rest_clients_expect(system: RunningSystem, admin_token: str) -> None:
    genre = f"genre-{uuid.uuid4().hex[:8]}"
    # An empty list is an empty array, not a missing key.
    empty = system.request("GET", f"/api/v1/movies?genre={genre}")
    assert empty.status == 200
    assert empty.body == {"movies": [], "nextPageToken": ""}

    # Methods no RPC binds to a known path: 405 with Allow, in the error shape.
    for method, path, allow in (
        ("PUT", "/api/v1/movies", "POST, GET"),
        ("POST", "/api/v1/movies/some-id", "GET, PATCH, DELETE"),
        ("GET", "/api/v1/orders/some-id:pay", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
    ):
        refused = system.request(method, path, {} if method != "GET" else None)
        assert refused.status == 405, (method, path, refused)
        assert refused.headers["allow"] == allow
        assert refused.body["code"] == 12
        assert reason(refused.body) == "METHOD_NOT_ALLOWED"

    # Short enum names are accepted where they are unambiguous; replies spell the full name.
    created = system.request(
        "POST", "/api/v1/movies",
        {"title": "Short names", "genres": [genre],
         "price": {"currencyCode": "EUR", "amountMinor": 500}},
        token=admin_token,
    )  # fmt: skip
    assert created.status == 200, created
    movie_id = created.body["id"]
    for view in ("FULL", "MOVIE_VIEW_FULL"):
        full = system.request("GET", f"/api/v1/movies/{movie_id}?view={view}")
        assert full.status == 200, full
        assert full.body["castMembers"] == []
    wrong = system.request("GET", f"/api/v1/movies/{movie_id}?view=EVERYTHING")
    assert wrong.status == 400
    assert "view" in wrong.body["message"]

    # Page sizes above the maximum are lowered to it (AIP-158), not refused.
    big = system.request("GET", f"/api/v1/movies?genre={genre}&pageSize=5000")
    assert big.status == 200
    assert [m["id"] for m in big.body["movies"]] == [movie_id]

    # The transcoder drops body fields the message does not have (envoyproxy/envoy#46623):
    # the closest safe behaviour is that nothing changes because of them. A misspelt
    # required field is reported missing, and a PATCH changes only the fields that arrived.
    misspelt = system.request(
        "POST", "/api/v1/movies",
        {"titel": "Typo", "price": {"currencyCode": "EUR", "amountMinor": 500}},
        token=admin_token,
    )  # fmt: skip
    assert misspelt.status == 400
    assert "movie.title" in violations(misspelt.body)
    nothing = system.request(
        "PATCH", f"/api/v1/movies/{movie_id}", {"titel": "Typo"}, token=admin_token
    )
    assert nothing.status == 400
    assert "update_mask" in violations(nothing.body)
    # updateMask belongs in the query; sent in the body it is dropped, and the fields sent
    # are exactly what the implied mask (AIP-134) changes.
    patched = system.request(
        "PATCH", f"/api/v1/movies/{movie_id}", {"title": "Renamed", "updateMask": "plot"},
        token=admin_token,
    )  # fmt: skip
    assert patched.status == 200, patched
    assert patched.body["title"] == "Renamed"
    masked = system.request(
        "PATCH", f"/api/v1/movies/{movie_id}?updateMask=plot", {"title": "Ignored", "plot": "p"},
        token=admin_token,
    )  # fmt: skip
    assert masked.status == 200, masked
    assert (masked.body["title"], masked.body["plot"]) == ("Renamed", "p")


def test_register_login_order_and_pay(system: RunningSystem, admin_token: str) -> None:
    prices = {"Alien": 999, "Aliens": 1299}
    movie_ids = []
    for title, amount in prices.items():
        reply = system.request(
            "POST", "/api/v1/movies",
            {"title": title, "price": {"currencyCode": "EUR", "amountMinor": amount}},
            token=admin_token,
        )  # fmt: skip
        movie_ids.append(reply.body["id"])
    buyer, token = register(system, "buyer")

    request_id = str(uuid.uuid4())
    body = {
        "items": [
            {"movieId": movie_ids[0], "quantity": 2},
            {"movieId": movie_ids[1], "quantity": 1},
        ]
    }
    created = system.request("POST", f"/api/v1/orders?requestId={request_id}", body, token=token)
    assert created.status == 200, created
    order = created.body
    assert order["status"] == "ORDER_STATUS_PENDING"
    assert order["userId"] == buyer["id"]
    assert order["total"] == {"currencyCode": "EUR", "amountMinor": str(2 * 999 + 1299)}
    again = system.request("POST", f"/api/v1/orders?requestId={request_id}", body, token=token)
    assert again.body["id"] == order["id"], "a retry with the same request id is the same order"

    declined = system.request(
        "POST", f"/api/v1/orders/{order['id']}:pay",
        {"paymentToken": "tok_chargeDeclined", "requestId": str(uuid.uuid4())}, token=token,
    )  # fmt: skip
    assert declined.status == 200, declined
    assert declined.body["status"] == "ORDER_STATUS_PAYMENT_FAILED"
    paid = system.request(
        "POST", f"/api/v1/orders/{order['id']}:pay",
        {"paymentToken": "tok_visa", "requestId": str(uuid.uuid4())}, token=token,
    )  # fmt: skip
    assert paid.status == 200, paid
    assert paid.body["status"] == "ORDER_STATUS_PAID"
    assert [p["outcome"] for p in paid.body["payments"]] == [
        "PAYMENT_OUTCOME_DECLINED",
        "PAYMENT_OUTCOME_SUCCEEDED",
    ]
    cancel = system.request("POST", f"/api/v1/orders/{order['id']}:cancel", {}, token=token)
    assert cancel.status == 400
    assert cancel.body["code"] == 9  # FAILED_PRECONDITION: a paid order stays paid

    listed = system.request("GET", "/api/v1/orders", token=token)
    assert [o["id"] for o in listed.body["orders"]] == [order["id"]]
    _, other = register(system, "other")
    assert system.request("GET", f"/api/v1/orders/{order['id']}", token=other).status in (403, 404)
