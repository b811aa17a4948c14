"""Access tokens: Ed25519-signed JWTs (PyJWT), issued by the user service, verified
everywhere with the public key from the settings (no network call per request).

Every token carries ``kid`` in its header and ``sub``, ``role``, ``iss``, ``aud``,
``iat``, ``exp`` and ``jti`` claims; all of them are required and checked. Only EdDSA is
accepted, so ``alg: none`` and HS256-with-the-public-key tricks are refused.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import json
import os
import pathlib
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common.context import Principal, Role
from services.common.errors import Unauthenticated

ALGORITHM = "EdDSA"
_LEEWAY_SECONDS = 5


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key_pem: bytes) -> dict[str, str]:
    """The public key as a JWK (RFC 8037), with its RFC 7638 thumbprint as ``kid``."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the JWT public key must be an Ed25519 key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    thumbprint = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return {**members, "kid": _b64url(thumbprint), "alg": ALGORITHM, "use": "sig"}


def key_id(public_key_pem: bytes) -> str:
    return public_jwk(public_key_pem)["kid"]


@dataclass(frozen=True)
class IssuedToken:
    """A signed access token and when it expires."""

    token: str
    expires_at: dt.datetime


class TokenIssuer:
    """Signs access tokens with the private key. Only the user service has one."""

    def __init__(
        self, private_key_pem: bytes, *, issuer: str, audience: str, ttl_seconds: int
    ) -> None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("the JWT private key must be an Ed25519 key")
        self._key = key
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._kid = key_id(public_pem)
        self._issuer = issuer
        self._audience = audience
        self._ttl = dt.timedelta(seconds=ttl_seconds)

    def issue(self, subject: str, role: Role, *, now: dt.datetime | None = None) -> IssuedToken:
        issued_at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        expires_at = issued_at + self._ttl
        claims: dict[str, Any] = {
            "sub": subject,
            "role": role.value,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": issued_at,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})
        return IssuedToken(token=token, expires_at=expires_at)


class TokenVerifier:
    """Checks signature, ``kid``, issuer, audience, expiry and claims of an access token.

    A signature check costs about 250 µs of CPU, and a client sends the same token with
    every call, so tokens that verified are remembered (up to ``cache_size``, least
    recently used out) with their expiry, which is checked again on every use. A token is
    immutable: the same string verified once is valid until it expires. Refused tokens are
    not remembered.
    """

    def __init__(
        self, public_key_pem: bytes, *, issuer: str, audience: str, cache_size: int = 4096
    ) -> None:
        self._key = serialization.load_pem_public_key(public_key_pem)
        self._kid = key_id(public_key_pem)
        self._issuer = issuer
        self._audience = audience
        self._cache_size = cache_size
        self._verified: collections.OrderedDict[str, tuple[Principal, float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`Unauthenticated` for anything else."""
        with self._lock:
            remembered = self._verified.get(token)
            if remembered is not None:
                self._verified.move_to_end(token)
        if remembered is not None:
            principal, expires_at = remembered
            if time.time() < expires_at + _LEEWAY_SECONDS:
                return principal
            with self._lock:
                self._verified.pop(token, None)
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED")
        principal, expires_at = self._verify_signed(token)
        with self._lock:
            self._verified[token] = (principal, expires_at)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return principal

    def _verify_signed(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self._kid:
                raise Unauthenticated("access token signed by an unknown key")
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["sub", "role", "iss", "aud", "iat", "exp", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid access token", reason="TOKEN_INVALID") from None
        try:
            role = Role(claims["role"])
        except ValueError:
            raise Unauthenticated("invalid access token", reason="TOKEN_INVALID") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("invalid access token", reason="TOKEN_INVALID")
        return Principal(subject=subject, role=role), float(claims["exp"])


def ensure_keypair(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Ed25519 key files in ``directory`` (made on first use): (private, public) paths.

    This is how ``cinema up`` gets keys on a fresh machine; containers mount their own.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / "jwt-ed25519.pem"
    public_path = directory / "jwt-ed25519.pub.pem"
    if not private_path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    if not public_path.exists():
        private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        public_path.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private_path, public_path
