"""Access tokens: Ed25519-signed JWTs (PyJWT), issued by the user service, verified
everywhere with the public keys from the settings (no network call per request): one key
file, or a key ring directory that rotates (:mod:`services.common.keyring`).

Every token carries ``kid`` in its header and ``sub``, ``role``, ``iss``, ``aud``,
``iat``, ``exp`` and ``jti`` claims; all of them are required and checked. Tokens issued
at a login also carry ``sid``, the session they belong to, which a logout or revocation
ends everywhere (:mod:`services.common.revocations`). Only EdDSA is accepted, so ``alg:
none`` and HS256-with-the-public-key tricks are refused.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common.context import Principal, Role
from services.common.errors import Unauthenticated

if TYPE_CHECKING:
    from services.common.keyring import KeyRing

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


SigningKey = tuple[str, ed25519.Ed25519PrivateKey]


class TokenIssuer:
    """Signs access tokens with the private key. Only the user service has one: a key
    file, or the newest key of a ring (:meth:`from_ring`), looked up at each issue."""

    def __init__(
        self, private_key_pem: bytes, *, issuer: str, audience: str, ttl_seconds: int
    ) -> None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("the JWT private key must be an Ed25519 key")
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fixed: SigningKey = (key_id(public_pem), key)
        self._init(lambda: fixed, issuer=issuer, audience=audience, ttl_seconds=ttl_seconds)

    def _init(
        self, signing: Callable[[], SigningKey], *, issuer: str, audience: str, ttl_seconds: int
    ) -> None:
        self._signing = signing
        self._issuer = issuer
        self._audience = audience
        self._ttl = dt.timedelta(seconds=ttl_seconds)
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_ring(
        cls, ring: KeyRing, *, issuer: str, audience: str, ttl_seconds: int
    ) -> TokenIssuer:
        def signing() -> SigningKey:
            current = ring.keys().signing
            if current is None:
                raise RuntimeError(f"the key ring {ring.directory} has no private key")
            return current

        signing()  # fail at start, not at the first login
        self = cls.__new__(cls)
        self._init(signing, issuer=issuer, audience=audience, ttl_seconds=ttl_seconds)
        return self

    @property
    def kid(self) -> str:
        """The id of the key that signs right now."""
        return self._signing()[0]

    def issue(
        self,
        subject: str,
        role: Role,
        *,
        session_id: str | None = None,
        now: dt.datetime | None = None,
    ) -> IssuedToken:
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
        if session_id is not None:
            claims["sid"] = session_id
        kid, key = self._signing()
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
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
        fixed = {key_id(public_key_pem): serialization.load_pem_public_key(public_key_pem)}
        self._init(lambda: fixed, issuer=issuer, audience=audience, cache_size=cache_size)

    @classmethod
    def from_ring(
        cls, ring: KeyRing, *, issuer: str, audience: str, cache_size: int = 4096
    ) -> TokenVerifier:
        """Verify with every live key of ``ring``, following its rotations."""
        loaded: dict[bytes, Any] = {}

        def keys() -> Mapping[str, Any]:
            verifying = ring.keys().verifying
            for key in verifying:
                if key.public_pem not in loaded:
                    loaded[key.public_pem] = serialization.load_pem_public_key(key.public_pem)
            return {key.kid: loaded[key.public_pem] for key in verifying}

        self = cls.__new__(cls)
        self._init(keys, issuer=issuer, audience=audience, cache_size=cache_size)
        return self

    def _init(
        self,
        keys: Callable[[], Mapping[str, Any]],
        *,
        issuer: str,
        audience: str,
        cache_size: int,
    ) -> None:
        self._keys = keys
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
            key = self._keys().get(str(header.get("kid")))
            if key is None:
                raise Unauthenticated("access token signed by an unknown key")
            claims = jwt.decode(
                token,
                key,
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
        session = claims.get("sid", "")
        if not isinstance(subject, str) or not subject or not isinstance(session, str):
            raise Unauthenticated("invalid access token", reason="TOKEN_INVALID")
        principal = Principal(subject=subject, role=role, session_id=session)
        return principal, float(claims["exp"])


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
