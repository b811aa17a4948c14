"""What the two baseline apps share: settings, the JSON models, errors, and admin auth.

The JSON is the shape Cinema's Envoy transcoder answers (proto3 canonical JSON of
``protos/cinema/v1/{movie,cast,money}.proto``): lowerCamelCase names, ``int64`` as a
string (``"amountMinor": "999"``), RFC 3339 UTC timestamps, empty fields left out.
Requests accept both spellings of every name, and ``amountMinor`` as a number or a string,
as the transcoder does; unknown fields are ignored, as the transcoder ignores them.

Errors are Cinema's JSON error body, ``{"code": <gRPC code>, "message", "details"}`` with
``google.rpc.ErrorInfo`` and, for bad input, ``google.rpc.BadRequest`` field violations,
under the same HTTP status Envoy maps the code to.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pathlib
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from sqlalchemy.engine import make_url

from services.common import errors
from services.common.auth import TokenVerifier
from services.common.context import Principal

#: How the apps reach their database (see the package docstring for the measurements).
DB_ACCESS_CHOICES = ("asyncpg", "sqlalchemy-async", "sync")
DEFAULT_DB_ACCESS = "asyncpg"
DEFAULT_POOL_SIZE = 10
ERROR_DOMAIN = "cinema.v1"

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

#: Domain error -> (HTTP status, gRPC code), as Envoy's transcoder maps them.
_STATUS: tuple[tuple[type[errors.DomainError], int, int], ...] = (
    (errors.InvalidArgument, 400, 3),
    (errors.NotFound, 404, 5),
    (errors.AlreadyExists, 409, 6),
    (errors.FailedPrecondition, 400, 9),
    (errors.Unauthenticated, 401, 16),
    (errors.PermissionDenied, 403, 7),
    (errors.Unavailable, 503, 14),
    (errors.DeadlineExceeded, 504, 4),
)


class SettingsError(RuntimeError):
    """A setting the app needs is missing or wrong."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """One app's settings, from ``BASELINE_*`` environment variables.

    * ``BASELINE_DATABASE_URL``: SQLAlchemy URL of the service's own database
      (``postgresql+psycopg2://...``; the async drivers get the same database).
    * ``BASELINE_JWT_PUBLIC_KEY_FILE``: the Ed25519 public key (PEM) that verifies tokens.
    * ``BASELINE_DB_ACCESS``: ``asyncpg`` (default), ``sqlalchemy-async`` or ``sync``.
    * ``BASELINE_DB_POOL_SIZE``: database connections per process (default 10).
    * ``BASELINE_CAST_URL`` (movie only): base URL of the cast service, i.e. nginx.
    * ``BASELINE_JWT_ISSUER`` / ``BASELINE_JWT_AUDIENCE``: both ``cinema`` by default.
    """

    database_url: str
    public_key_pem: bytes
    db_access: str = DEFAULT_DB_ACCESS
    pool_size: int = DEFAULT_POOL_SIZE
    cast_url: str = ""
    issuer: str = "cinema"
    audience: str = "cinema"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        url = env.get("BASELINE_DATABASE_URL", "")
        if not url or make_url(url).get_backend_name() != "postgresql":
            raise SettingsError("BASELINE_DATABASE_URL must be a PostgreSQL SQLAlchemy URL")
        key_file = env.get("BASELINE_JWT_PUBLIC_KEY_FILE", "")
        if not key_file:
            raise SettingsError("BASELINE_JWT_PUBLIC_KEY_FILE is required")
        access = env.get("BASELINE_DB_ACCESS", DEFAULT_DB_ACCESS)
        if access not in DB_ACCESS_CHOICES:
            raise SettingsError(f"BASELINE_DB_ACCESS must be one of {', '.join(DB_ACCESS_CHOICES)}")
        return cls(
            database_url=url,
            public_key_pem=pathlib.Path(key_file).read_bytes(),
            db_access=access,
            pool_size=int(env.get("BASELINE_DB_POOL_SIZE", str(DEFAULT_POOL_SIZE))),
            cast_url=env.get("BASELINE_CAST_URL", "").rstrip("/"),
            issuer=env.get("BASELINE_JWT_ISSUER", "cinema"),
            audience=env.get("BASELINE_JWT_AUDIENCE", "cinema"),
        )


# --- JSON models -------------------------------------------------------------------------------


class ApiModel(BaseModel):
    """lowerCamelCase on the wire, both spellings accepted, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )


class MoneyIn(ApiModel):
    currency_code: str = ""
    amount_minor: int = 0


class MovieIn(ApiModel):
    """The body of ``POST /api/v1/movies``: the client-settable fields of a movie."""

    title: str = ""
    plot: str = ""
    genres: list[str] = []
    cast_ids: list[str] = []
    price: MoneyIn | None = None


class Money(ApiModel):
    currency_code: str
    #: ``int64`` is a JSON string in proto3's canonical JSON.
    amount_minor: str


class Movie(ApiModel):
    id: str
    title: str
    plot: str = ""
    genres: list[str] = []
    cast_ids: list[str] = []
    price: Money
    create_time: dt.datetime
    update_time: dt.datetime


class MovieList(ApiModel):
    movies: list[Movie] = []
    next_page_token: str = ""


class CastIn(ApiModel):
    """The body of ``POST /api/v1/casts``."""

    name: str = ""
    nationality: str | None = None


class Cast(ApiModel):
    id: str
    name: str
    nationality: str | None = None
    create_time: dt.datetime
    update_time: dt.datetime


class CastList(ApiModel):
    casts: list[Cast] = []
    next_page_token: str = ""


class CastBatch(ApiModel):
    casts: list[Cast] = []


#: Proto3 JSON leaves out fields at their default (empty strings and lists, no
#: nationality); the response models' defaults are exactly those.
RESPONSE_OPTIONS: dict[str, Any] = {"response_model_exclude_defaults": True}


# --- errors ------------------------------------------------------------------------------------


def error_body(error: errors.DomainError) -> tuple[int, dict[str, Any]]:
    """HTTP status and Cinema's JSON error body for a domain error."""
    http_status, code = 500, 13
    for cls, status, grpc_code in _STATUS:
        if isinstance(error, cls):
            http_status, code = status, grpc_code
            break
    info: dict[str, Any] = {"@type": _ERROR_INFO, "reason": error.reason, "domain": ERROR_DOMAIN}
    if error.metadata:
        info["metadata"] = dict(error.metadata)
    details: list[dict[str, Any]] = [info]
    if isinstance(error, errors.InvalidArgument):
        details.append(
            {
                "@type": _BAD_REQUEST,
                "fieldViolations": [
                    {"field": v.field, "description": v.description} for v in error.violations
                ],
            }
        )
    return http_status, {"code": code, "message": error.message, "details": details}


def _field_path(prefix: str, location: tuple[Any, ...]) -> str:
    """``movie.price.amount_minor`` from pydantic's ``("body", "price", "amountMinor")``."""
    parts = [prefix]
    for part in location[1:] if location[:1] == ("body",) else location:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        else:
            parts.append(_snake(str(part)))
    return ".".join(parts)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def install_error_handlers(app: FastAPI, resource: str) -> None:
    """Domain errors and request validation errors as Cinema's JSON errors (400, not 422)."""

    async def domain_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, errors.DomainError)
        status, body = error_body(error)
        return JSONResponse(body, status_code=status)

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        violations = [
            errors.FieldViolation(_field_path(resource, tuple(e.get("loc", ()))), e["msg"])
            for e in error.errors()
        ]
        status, body = error_body(errors.InvalidArgument(violations))
        return JSONResponse(body, status_code=status)

    app.add_exception_handler(errors.DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)


# --- auth --------------------------------------------------------------------------------------


async def require_admin(request: Request) -> Principal:
    """The admin behind ``Authorization: Bearer <token>`` (the app's ``state.verifier``).

    Async on purpose: a plain ``def`` dependency would cost a threadpool hop per request.
    The verifier remembers verified tokens until they expire, as Cinema's does (it is the
    same class, :class:`services.common.auth.TokenVerifier`), so a repeated token costs a
    dictionary lookup on both sides.
    """
    header = request.headers.get("authorization")
    if header is None:
        raise errors.Unauthenticated("this call needs an access token")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated("authorization must be 'Bearer <access token>'")
    verifier: TokenVerifier = request.app.state.verifier
    principal = verifier.verify(token.strip())
    if not principal.is_admin:
        raise errors.PermissionDenied("only an admin may do this")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]


def verifier_for(settings: Settings) -> TokenVerifier:
    return TokenVerifier(
        settings.public_key_pem, issuer=settings.issuer, audience=settings.audience
    )


def health_route(app: FastAPI) -> None:
    """``GET /healthz``: the runner waits on it."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "SERVING"}


def new_app(settings: Settings, service: str, lifespan: Any) -> FastAPI:
    """A baseline app: token verifier, Cinema's error body, ``/healthz``; no docs pages."""
    app = FastAPI(
        title=f"baseline {service} service", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.verifier = verifier_for(settings)
    install_error_handlers(app, service)
    health_route(app)
    return app
