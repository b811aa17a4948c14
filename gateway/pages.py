"""What the front door serves to browsers: the web shop, the API explorer and the OpenAPI document.

Envoy sends every request that is not gRPC, not ``/api/...`` and not ``/healthz`` to the
gateway sidecar's plain HTTP server, which hands it to :meth:`Site.answer`. So the pages
are on the same origin as the JSON API they call, and need no CORS.

* ``/``, ``/movies/{id}``, ``/login``, ``/register``, ``/verify``, ``/basket``, ``/orders``,
  ``/orders/{id}``, ``/admin``: the shop, plain HTML pages from ``gateway/web/pages/``.
  Each loads one small vanilla-JavaScript module from ``gateway/web/static/`` that calls
  the JSON API with ``fetch``. No framework and no build step: the shop is a thin client
  of the API, a handful of forms and lists, and what ships is what is in the repository,
  readable as it is and with nothing to keep in step with a bundler.
* ``/docs/``: Swagger UI, whose files come from the ``swagger-ui-bundle-v2`` package (see
  pyproject.toml), started by ``gateway/web/docs/swagger-init.js`` on ``/openapi.json``.
* ``/openapi.json``: the document ``tools/protogen.py`` writes, read once at start-up.

Security: every answer carries a Content-Security-Policy that allows scripts, styles and
``fetch`` from this origin only (no inline script, no inline handler, no ``eval``), and
``X-Content-Type-Options: nosniff`` with an exact content type. The pages put API data
into the DOM with ``textContent`` only, and keep the access token in ``sessionStorage``
(never in a URL). Files are read once at start-up into memory and looked up by exact
path, so no request ever reaches the file system and ``..`` cannot escape.

Unknown paths: a browser navigating (``Accept`` has ``text/html``) to a path that does not
look like a file gets an HTML 404 page with a way back to the shop; anything else (a
script, ``curl``, a path with a file extension, anything under ``/static/`` or ``/docs/``)
gets the JSON error every other Cinema route answers. Methods other than GET and HEAD on a
known path are 405 in that JSON shape, with ``Allow``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import pathlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

WEB_DIR = pathlib.Path(__file__).resolve().parent / "web"
_PACKAGE_PARENT = pathlib.Path(__file__).resolve().parent.parent
#: Where ``tools/protogen.py`` writes the OpenAPI document in a checkout (``cinema up``).
CHECKOUT_OPENAPI_FILE = _PACKAGE_PARENT / "gen" / "openapi" / "cinema.openapi.json"
#: Where the Dockerfile puts it in the image (beside the descriptor set Envoy reads).
CONTAINER_OPENAPI_FILE = pathlib.Path("/etc/cinema/cinema.openapi.json")

#: Swagger UI's files served under /docs/. Listed, not globbed, so that an upgrade of the
#: package that renames one fails at start-up and in the unit tests, not in a browser.
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")

#: The shop's pages: path -> file in gateway/web/pages/.
PAGES: Mapping[str, str] = {
    "/": "catalogue.html",
    "/login": "login.html",
    "/register": "register.html",
    "/verify": "verify.html",
    "/basket": "basket.html",
    "/orders": "orders.html",
    "/admin": "admin.html",
}
#: Pages whose path carries an id (opaque, so any one segment).
PAGE_PATTERNS: Sequence[tuple[re.Pattern[str], str]] = (
    (re.compile(r"/movies/[^/]+"), "movie.html"),
    (re.compile(r"/orders/[^/]+"), "order.html"),
)

#: Every answer's policy: this origin only, no inline script or style, no plugins, no
#: framing. ``img-src data:`` is for the SVG icons Swagger UI's stylesheet inlines.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
)
ALLOWED_METHODS = ("GET", "HEAD")

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
#: Worth compressing: text, and large enough that gzip's header does not outweigh it.
_COMPRESSIBLE = (".html", ".js", ".css", ".json", ".svg")
_MIN_COMPRESSED_SIZE = 1024
#: google.rpc.ErrorInfo.domain of every Cinema error.
ERROR_DOMAIN = "cinema.v1"


@dataclass(frozen=True)
class Asset:
    """One file as it is served: its bytes (and gzipped bytes, when worth it) and its type."""

    body: bytes
    content_type: str
    etag: str
    gzipped: bytes | None = None

    @classmethod
    def of(cls, body: bytes, suffix: str) -> Asset:
        """An asset for ``body``, typed by the file ``suffix`` (``.js``, ...)."""
        gzipped = None
        if suffix in _COMPRESSIBLE and len(body) >= _MIN_COMPRESSED_SIZE:
            # mtime=0: the same bytes every start, so the ETag below holds for both forms.
            gzipped = gzip.compress(body, compresslevel=6, mtime=0)
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        return cls(body, _CONTENT_TYPES[suffix], etag, gzipped)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, headers (security headers included) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Site:
    """Everything served besides ``/healthz``, held in memory: build it with :meth:`load`."""

    pages: dict[str, Asset]
    assets: dict[str, Asset]
    not_found_page: Asset
    openapi: Asset | None = None
    #: Why there is no OpenAPI document, said in the 503 that stands in for it.
    openapi_missing: str = ""

    @classmethod
    def load(
        cls,
        *,
        openapi_file: pathlib.Path | None = None,
        web_dir: pathlib.Path = WEB_DIR,
        swagger_ui_dir: pathlib.Path | None = None,
    ) -> Site:
        """Read every page and asset, Swagger UI's files and the OpenAPI document.

        A missing page or Swagger UI file raises (the install is broken). A missing OpenAPI
        document only logs a warning: the sidecar's other duties (health, reflection) must
        not wait for it, and ``/openapi.json`` says what to do instead.
        """
        if swagger_ui_dir is None:
            swagger_ui_dir = _swagger_ui_dir()
        pages = {name: _read(web_dir / "pages" / name) for name in _page_files()}
        assets: dict[str, Asset] = {}
        for path in sorted((web_dir / "static").iterdir()):
            if path.is_file():
                assets[f"/static/{path.name}"] = _read(path)
        for path in sorted((web_dir / "docs").iterdir()):
            if path.is_file() and path.name != "index.html":
                assets[f"/docs/{path.name}"] = _read(path)
        for name in SWAGGER_UI_FILES:
            assets[f"/docs/{name}"] = _read(swagger_ui_dir / name)
        assets["/docs/"] = _read(web_dir / "docs" / "index.html")
        site = cls(pages, assets, _read(web_dir / "pages" / "404.html"))
        openapi_file = openapi_file or default_openapi_file()
        try:
            document = openapi_file.read_bytes()
            json.loads(document)
        except (OSError, ValueError) as error:
            site.openapi_missing = (
                f"the OpenAPI document {openapi_file} could not be read ({error}); "
                "generate it with `python tools/protogen.py`"
            )
            logger.warning("%s", site.openapi_missing)
        else:
            site.openapi = Asset.of(document, ".json")
        return site

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        """The reply to ``method target`` (``target`` as in the request line)."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if path == "/docs":
            # Swagger UI's files are named relative to the index: it must end in a slash.
            return self._reply(301, b"", [("location", "/docs/")], method=method)
        asset = self._resolve(path)
        if asset is None and path == "/openapi.json":
            return self._error(503, 14, "OPENAPI_MISSING", self.openapi_missing, method=method)
        if asset is None:
            return self._not_found(path, headers, method=method)
        if method not in ALLOWED_METHODS:
            return self._error(
                405,
                12,
                "METHOD_NOT_ALLOWED",
                f"method not allowed here; allowed: {', '.join(ALLOWED_METHODS)}",
                method=method,
                extra=[("allow", ", ".join(ALLOWED_METHODS))],
            )
        if asset.etag in _etags(headers.get("if-none-match", "")):
            return self._reply(304, b"", _cache_headers(asset), method=method)
        body, encoding = asset.body, []
        if asset.gzipped is not None and _accepts_gzip(headers.get("accept-encoding", "")):
            body, encoding = asset.gzipped, [("content-encoding", "gzip")]
        return self._reply(
            200,
            body,
            [("content-type", asset.content_type), *_cache_headers(asset), *encoding],
            method=method,
        )

    def _resolve(self, path: str) -> Asset | None:
        if path == "/openapi.json":
            return self.openapi
        if path in PAGES:
            return self.pages[PAGES[path]]
        for pattern, name in PAGE_PATTERNS:
            if pattern.fullmatch(path):
                return self.pages[name]
        return self.assets.get(path)

    def _not_found(self, path: str, headers: Mapping[str, str], *, method: str) -> Reply:
        last_segment = path.rsplit("/", 1)[-1]
        looks_like_a_page = (
            "." not in last_segment
            and not path.startswith(("/static/", "/docs/", "/api/", "/.well-known/"))
            and "text/html" in headers.get("accept", "")
        )
        if looks_like_a_page:
            page = self.not_found_page
            return self._reply(
                404,
                page.body,
                [("content-type", page.content_type), ("cache-control", "no-store")],
                method=method,
            )
        return self._error(404, 5, "NO_SUCH_ROUTE", f"no such path: {path}", method=method)

    def _error(
        self,
        status: int,
        code: int,
        reason: str,
        message: str,
        *,
        method: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        # The shape of every other Cinema error: google.rpc.Status in proto3 JSON.
        document: dict[str, Any] = {
            "code": code,
            "message": message,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": ERROR_DOMAIN,
                    "metadata": {},
                }
            ],
        }
        headers = [("content-type", "application/json"), ("cache-control", "no-store"), *extra]
        return self._reply(status, json.dumps(document).encode(), headers, method=method)

    def _reply(
        self, status: int, body: bytes, headers: Sequence[tuple[str, str]], *, method: str
    ) -> Reply:
        # HEAD: the headers GET would send, content-length included, and no body. A 304 has
        # no content-length: it would have to be the length of the body it stands for.
        length = () if status == 304 else (("content-length", str(len(body))),)
        all_headers = (*headers, *length, *SECURITY_HEADERS)
        return Reply(status, all_headers, b"" if method == "HEAD" else body)


def default_openapi_file() -> pathlib.Path:
    """The repository's generated document in a checkout, else the container's copy.

    A checkout is recognised by the pyproject.toml beside the gateway package; an installed
    package (the image) has none, and its document is where the Dockerfile copied it.
    """
    if (_PACKAGE_PARENT / "pyproject.toml").is_file():
        return CHECKOUT_OPENAPI_FILE
    return CONTAINER_OPENAPI_FILE


def _swagger_ui_dir() -> pathlib.Path:
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return pathlib.Path(str(swagger_ui_path))


def _page_files() -> list[str]:
    return sorted({*PAGES.values(), *(name for _, name in PAGE_PATTERNS)})


def _read(path: pathlib.Path) -> Asset:
    return Asset.of(path.read_bytes(), path.suffix)


def _cache_headers(asset: Asset) -> list[tuple[str, str]]:
    # Revalidate every time: the files change with a deploy and carry no version in their
    # names, and a 304 costs one round trip on loopback. Vary: gzip or not is per client.
    return [("etag", asset.etag), ("cache-control", "no-cache"), ("vary", "accept-encoding")]


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _accepts_gzip(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
