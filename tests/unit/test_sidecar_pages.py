"""What the sidecar serves besides health: the shop's pages, /docs and /openapi.json
(gateway/pages.py), and the HTTP server that answers them (gateway/sidecar.py).

The browser tests (tests/e2e/browser) drive the pages; these check the rules every page
must keep, statically and fast: no inline script or handler, no HTML built from data, no
token in localStorage, every referenced asset served, the right headers and statuses.
"""

from __future__ import annotations

import gzip
import http.client
import json
import pathlib
import re
import threading
from collections.abc import Iterator

import pytest

from gateway import pages, sidecar
from gateway.pages import WEB_DIR, Site

HTML_FILES = sorted([*(WEB_DIR / "pages").glob("*.html"), WEB_DIR / "docs" / "index.html"])
JS_FILES = sorted([*(WEB_DIR / "static").glob("*.js"), *(WEB_DIR / "docs").glob("*.js")])
OPENAPI = {"openapi": "3.1.0", "info": {"title": "t", "version": "v1"}, "paths": {}}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    document = tmp_path_factory.mktemp("openapi") / "cinema.openapi.json"
    document.write_text(json.dumps(OPENAPI))
    return Site.load(openapi_file=document)


def get(site: Site, path: str, **headers: str) -> pages.Reply:
    return site.answer("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})


@pytest.mark.parametrize(
    "path",
    ["/", "/login", "/register", "/basket", "/orders", "/orders/o-1", "/admin", "/movies/m-1"],
)
def test_every_page_is_html_with_the_security_headers(site: Site, path: str) -> None:
    reply = get(site, path)
    assert reply.status == 200
    assert reply.header("content-type") == "text/html; charset=utf-8"
    assert reply.header("content-security-policy") == pages.CONTENT_SECURITY_POLICY
    assert reply.header("x-content-type-options") == "nosniff"
    assert reply.body.startswith(b"<!DOCTYPE html>")


def test_the_policy_allows_no_inline_script_and_nothing_from_elsewhere() -> None:
    directives = dict(d.split(" ", 1) for d in pages.CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert "unsafe" not in pages.CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", HTML_FILES, ids=lambda p: p.name)
def test_html_has_no_inline_script_handler_or_style(path: pathlib.Path) -> None:
    html = path.read_text()
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "inline event handler"
    assert not re.search(r"\sstyle\s*=|<style", html, re.I), "inline style"
    assert "javascript:" not in html.lower()


@pytest.mark.parametrize("path", JS_FILES, ids=lambda p: p.name)
def test_scripts_never_build_html_from_strings_or_keep_the_token_for_good(
    path: pathlib.Path,
) -> None:
    # Comments may name what the code avoids.
    code = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "localStorage"):  # fmt: skip
        assert sink not in code, f"{path.name} uses {sink}"


@pytest.mark.parametrize("path", HTML_FILES, ids=lambda p: p.name)
def test_every_asset_a_page_names_is_served(site: Site, path: pathlib.Path) -> None:
    html = path.read_text()
    base = "/docs/" if path.parent.name == "docs" else "/"
    for reference in re.findall(r'(?:src|href)="([^"#?]+)"', html):
        if reference.startswith(("http:", "https:", "//", "mailto:")):
            raise AssertionError(f"{path.name} loads {reference} from elsewhere")
        absolute = reference if reference.startswith("/") else base + reference
        assert get(site, absolute).status in (200, 301), f"{path.name}: {absolute}"


def test_every_module_a_script_imports_is_served(site: Site) -> None:
    for path in JS_FILES:
        for module in re.findall(r'from "\./([^"]+)"', path.read_text()):
            assert get(site, f"/static/{module}").status == 200, f"{path.name}: {module}"


def test_docs_serves_swagger_ui_from_its_package_and_our_init_script(site: Site) -> None:
    index = get(site, "/docs/")
    assert index.status == 200
    assert b'src="swagger-init.js"' in index.body
    bundle = get(site, "/docs/swagger-ui-bundle.js")
    assert bundle.header("content-type") == "text/javascript; charset=utf-8"
    assert b"SwaggerUIBundle" in bundle.body
    init = get(site, "/docs/swagger-init.js").body.decode()
    assert 'url: "/openapi.json"' in init
    # The package's own initializer points at the petstore: never served.
    assert get(site, "/docs/swagger-initializer.js").status == 404


def test_docs_without_a_slash_redirects(site: Site) -> None:
    reply = get(site, "/docs")
    assert reply.status == 301
    assert reply.header("location") == "/docs/"


def test_the_openapi_document_is_served_as_read(site: Site) -> None:
    reply = get(site, "/openapi.json")
    assert reply.status == 200
    assert reply.header("content-type") == "application/json"
    assert json.loads(reply.body) == OPENAPI


def test_a_missing_openapi_document_is_a_503_that_says_how_to_make_it(
    tmp_path: pathlib.Path,
) -> None:
    site = Site.load(openapi_file=tmp_path / "missing.json")
    reply = get(site, "/openapi.json")
    assert reply.status == 503
    body = json.loads(reply.body)
    assert body["code"] == 14
    assert "tools/protogen.py" in body["message"]
    assert body["details"][0]["reason"] == "OPENAPI_MISSING"
    assert get(site, "/").status == 200, "the shop does not need the document"


def test_the_default_document_is_the_generated_one_in_a_checkout() -> None:
    assert pages.default_openapi_file() == (
        pathlib.Path(pages.__file__).resolve().parent.parent
        / "gen"
        / "openapi"
        / "cinema.openapi.json"
    )


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_other_methods_on_a_known_path_are_405_with_allow(site: Site, method: str) -> None:
    reply = site.answer(method, "/movies/m-1", {})
    assert reply.status == 405
    assert reply.header("allow") == "GET, HEAD"
    body = json.loads(reply.body)
    assert body["code"] == 12
    assert body["details"][0]["reason"] == "METHOD_NOT_ALLOWED"


def test_unknown_paths_are_an_html_page_for_browsers_and_json_for_the_rest(site: Site) -> None:
    browser = get(site, "/no-such-page", accept="text/html,application/xhtml+xml")
    assert browser.status == 404
    assert browser.header("content-type") == "text/html; charset=utf-8"
    assert b"Page not found" in browser.body
    assert b"no-such-page" not in browser.body, "the path is not echoed into HTML"
    for path, accept in (("/no-such-page", "*/*"), ("/static/nope.js", "text/html"),
                         ("/docs/nope", "text/html"), ("/favicon.ico", "text/html"),
                         ("/movies/m-1/extra", "")):  # fmt: skip
        reply = get(site, path, accept=accept)
        assert reply.status == 404, path
        assert reply.header("content-type") == "application/json", path
        assert json.loads(reply.body)["code"] == 5, path
    assert site.answer("POST", "/nowhere", {}).status == 404


def test_a_query_string_does_not_change_the_page(site: Site) -> None:
    assert get(site, "/?genre=sci-fi&pageSize=5").body == get(site, "/").body


def test_head_sends_the_headers_of_get_and_no_body(site: Site) -> None:
    full = get(site, "/")
    head = site.answer("HEAD", "/", {})
    assert head.status == 200
    assert head.body == b""
    assert head.header("content-length") == str(len(full.body))


def test_an_unchanged_file_is_a_304(site: Site) -> None:
    etag = get(site, "/static/ui.js").header("etag")
    assert etag
    again = get(site, "/static/ui.js", if_none_match=etag)
    assert again.status == 304
    assert again.body == b""
    assert again.header("content-length") is None
    assert get(site, "/static/ui.js", if_none_match='"other"').status == 200


def test_big_text_is_gzipped_only_for_clients_that_accept_it(site: Site) -> None:
    plain = get(site, "/docs/swagger-ui-bundle.js")
    zipped = get(site, "/docs/swagger-ui-bundle.js", accept_encoding="gzip, deflate, br")
    assert zipped.header("content-encoding") == "gzip"
    assert gzip.decompress(zipped.body) == plain.body
    assert zipped.header("vary") == "accept-encoding"
    refused = get(site, "/docs/swagger-ui-bundle.js", accept_encoding="gzip;q=0")
    assert refused.header("content-encoding") is None
    assert (
        get(site, "/docs/favicon-32x32.png", accept_encoding="gzip").header("content-encoding")
        is None
    )


# --- the HTTP server itself ---------------------------------------------------------------


@pytest.fixture(scope="module")
def http_port(site: Site) -> Iterator[int]:
    # An admin URL nothing answers: /healthz then says NOT_SERVING, quickly.
    server = sidecar._HttpServer(("127.0.0.1", 0), "http://127.0.0.1:9", site)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_server_answers_pages_and_healthz_on_one_kept_alive_connection(
    http_port: int,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
    try:
        # A refused body is read to its end, so the next request on the connection works.
        connection.request("POST", "/", body=b'{"a": 1}' * 1000)
        refused = connection.getresponse()
        assert refused.status == 405
        assert refused.getheader("allow") == "GET, HEAD"
        refused.read()
        connection.request("GET", "/login")
        page = connection.getresponse()
        assert page.status == 200
        assert page.getheader("content-security-policy") == pages.CONTENT_SECURITY_POLICY
        assert b"Log in" in page.read()
        connection.request("GET", "/healthz")
        health = connection.getresponse()
        assert health.status == 503
        assert health.getheader("content-type") == "application/json"
        assert json.loads(health.read())["status"] == "NOT_SERVING"
    finally:
        connection.close()
