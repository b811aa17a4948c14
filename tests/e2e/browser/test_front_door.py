"""The front door's non-API paths over plain HTTP, as curl sees them: content types,
security headers, 405 and 404, the OpenAPI document. No browser needed."""

from __future__ import annotations

import gzip
import http.client
import urllib.request
from collections.abc import Mapping

import pytest

from tests.e2e.conftest import RunningSystem

PAGES = ("/", "/login", "/register", "/verify", "/basket", "/orders", "/orders/some-id",
         "/admin", "/movies/some-id")  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_html_under_a_policy_without_inline_script(
    system: RunningSystem, path: str
) -> None:
    reply = system.request("GET", path)
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    policy = reply.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"


def _get(system: RunningSystem, path: str) -> tuple[int, Mapping[str, str], bytes]:
    with urllib.request.urlopen(f"http://{system.address}{path}", timeout=10) as reply:
        return reply.status, reply.headers, reply.read()


def test_assets_have_exact_content_types(system: RunningSystem) -> None:
    for path, content_type in (
        ("/static/api.js", "text/javascript; charset=utf-8"),
        ("/static/cinema.css", "text/css; charset=utf-8"),
        ("/docs/", "text/html; charset=utf-8"),
        ("/docs/swagger-init.js", "text/javascript; charset=utf-8"),
        ("/docs/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("/docs/swagger-ui.css", "text/css; charset=utf-8"),
        ("/docs/favicon-32x32.png", "image/png"),
        ("/openapi.json", "application/json"),
    ):
        status, headers, body = _get(system, path)
        assert status == 200, path
        assert headers["content-type"] == content_type, path
        assert headers["x-content-type-options"] == "nosniff", path
        assert body, path


def test_docs_redirects_to_its_index(system: RunningSystem) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", system.port, timeout=5)
    try:
        connection.request("GET", "/docs")
        reply = connection.getresponse()
        assert reply.status == 301
        assert reply.getheader("location") == "/docs/"
    finally:
        connection.close()


def test_the_openapi_document_describes_the_api(system: RunningSystem) -> None:
    reply = system.request("GET", "/openapi.json")
    assert reply.status == 200
    document = reply.body
    assert document["openapi"].startswith("3.1")
    assert "bearerAuth" in document["components"]["securitySchemes"]
    assert "/api/v1/movies" in document["paths"]


def test_big_assets_are_gzipped_for_clients_that_ask(system: RunningSystem) -> None:
    request = urllib.request.Request(
        f"http://{system.address}/docs/swagger-ui-bundle.js",
        headers={"accept-encoding": "gzip"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["content-encoding"] == "gzip"
        assert b"SwaggerUIBundle" in gzip.decompress(reply.read())


def test_other_methods_on_pages_are_405_with_allow(system: RunningSystem) -> None:
    for method, path in (("POST", "/"), ("DELETE", "/movies/some-id"), ("PUT", "/openapi.json")):
        reply = system.request(method, path, {})
        assert reply.status == 405, (method, path)
        assert reply.headers["allow"] == "GET, HEAD"
        assert reply.body["code"] == 12
        assert reply.body["details"][0]["reason"] == "METHOD_NOT_ALLOWED"
    # The connection is still good after a refused body: the next request is answered.
    assert system.request("GET", "/").status == 200


def test_unknown_paths_are_404_html_for_browsers_and_json_otherwise(
    system: RunningSystem,
) -> None:
    browser = system.request("GET", "/no-such-page", headers={"accept": "text/html"})
    assert browser.status == 404
    assert browser.headers["content-type"] == "text/html; charset=utf-8"
    assert "Page not found" in browser.body
    for path, accept in (("/no-such-page", "application/json"), ("/static/nope.js", "text/html"),
                         ("/docs/nope", "text/html"), ("/favicon.ico", "text/html")):  # fmt: skip
        reply = system.request("GET", path, headers={"accept": accept})
        assert reply.status == 404, path
        assert reply.headers["content-type"] == "application/json", path
        assert reply.body["code"] == 5, path


def test_head_answers_the_headers_of_get_without_a_body(system: RunningSystem) -> None:
    get = system.request("GET", "/")
    head = system.request("HEAD", "/")
    assert head.status == 200
    assert head.body is None
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["etag"] == get.headers["etag"]
    assert system.request("GET", "/healthz").status == 200
