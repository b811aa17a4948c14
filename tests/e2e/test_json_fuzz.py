"""JSON through Envoy, fuzzed: generated methods, paths, query strings, bodies and headers
against the running system. Whatever arrives, the answer is a JSON error of the documented
shape with a 4xx (or a success), never a 5xx, never an exception's class or Envoy's header
names in a message, and every service still answers afterwards."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.http_bindings import bindings
from tests.e2e.conftest import RunningSystem

TEMPLATES = sorted({(b.verb, b.path) for b in bindings()})
_VARIABLE = re.compile(r"\{[^}]+\}")
_LEAKS = ("Traceback", "<class", "Error'>", "x-envoy", "grpc-status", "content-length")

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["", "0", "-1", "9" * 30, "null", "%00", "..", "FULL", "a" * 300]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["title", "price", "genres", "castIds", "name", "email", "password", "displayName",
     "items", "movieId", "quantity", "paymentToken", "requestId", "role", "updateMask",
     "pageSize", "pageToken", "view", "ids", "id", "genre", "status", "userId", "bogus"]
) | texts  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str]]:
    verb, template = draw(st.sampled_from(TEMPLATES))
    method = draw(st.sampled_from([verb, verb, "GET", "POST", "PATCH", "DELETE", "PUT"]))
    path = _VARIABLE.sub(lambda _: urllib.parse.quote(draw(texts) or "x", safe=""), template)
    query = urllib.parse.urlencode(
        draw(st.lists(st.tuples(field_names, texts), max_size=4)), doseq=True
    )
    body: bytes | None = None
    if method in ("POST", "PATCH", "PUT"):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            body = draw(st.binary(max_size=64))
        else:
            value = draw(st.dictionaries(field_names, json_values, max_size=6)) if choice < 3 \
                else draw(json_values)  # fmt: skip
            body = json.dumps(value).encode()
    headers = {
        "content-type": draw(
            st.sampled_from(["application/json", "text/plain", "application/grpc", ""])
        )
    }
    return method, f"{path}?{query}" if query else path, body, headers


@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests(), authenticated=st.booleans())
def test_no_json_request_makes_a_5xx_or_leaks(
    system: RunningSystem, admin_token: str, request: Any, authenticated: bool
) -> None:
    method, path, body, headers = request
    if not headers["content-type"]:
        del headers["content-type"]
    reply = system.request(
        method, path, raw=body, headers=headers, token=admin_token if authenticated else None
    )
    assert reply.status < 500, (method, path, body, reply.status, reply.body)
    if reply.status >= 400:
        assert isinstance(reply.body, dict) and isinstance(reply.body.get("code"), int), reply
        message = str(reply.body.get("message", ""))
        assert not any(leak in message for leak in _LEAKS), (method, path, message)


def test_every_service_still_serves_after_the_fuzz(system: RunningSystem) -> None:
    health = system.request("GET", "/healthz")
    assert health.status == 200, health.body
