"""The JWT signing keys as a directory that rotates without restarts.

A key ring is a directory of Ed25519 key files, each named after when it was made and its
key id (the RFC 7638 thumbprint):

* ``<created>-<kid>.pub.pem``: the public key, which verifies tokens;
* ``<created>-<kid>.key.pem``: the private key (mode 0600), kept for the newest key only;
* ``<created>-<kid>.retire``: once a newer key signs, the Unix time after which this key
  verifies nothing (the last token it signed has expired by then).

The user service signs with the newest key that has a private file; every service
verifies with every public key not past its retirement; the gateway's
``/.well-known/jwks.json`` publishes those same keys. All of them re-read the directory
when it changes (looked at no more than once a second), so ``cinema keys rotate`` takes
effect within a second everywhere, with no restart: a token signed a moment before the
rotation keeps verifying until it expires, and a new one carries the new ``kid``.

Why a directory and not each service following the JWKS over HTTP: the services need no
network call, no cache policy and no bootstrap order to verify a token, and a directory is
what a Kubernetes Secret or a compose volume already is.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common.auth import key_id, public_jwk

_PUBLIC = re.compile(r"(\d+)-([A-Za-z0-9_-]+)\.pub\.pem")
#: Extra time a retired key keeps verifying, beyond the longest token lifetime: clocks.
RETIRE_MARGIN_SECONDS = 10
#: The ring's files are looked at no more often than this.
RELOAD_SECONDS = 1.0
#: ``ensure_keypair``'s files, adopted as the first key of a new ring.
_LEGACY_PRIVATE = "jwt-ed25519.pem"


@dataclasses.dataclass(frozen=True)
class RingKey:
    kid: str
    created: int
    public_pem: bytes
    retire_at: float | None


@dataclasses.dataclass(frozen=True)
class Keys:
    """What the ring holds right now."""

    #: Public keys that may still verify a token, newest first.
    verifying: tuple[RingKey, ...]
    #: The newest key's id and private key (None where the ring has no private key).
    signing: tuple[str, ed25519.Ed25519PrivateKey] | None

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document (RFC 7517) of the verifying keys."""
        return {"keys": [public_jwk(key.public_pem) for key in self.verifying]}


def _private_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write(path: pathlib.Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically (readers never see half a key)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def read(directory: pathlib.Path, now: float | None = None) -> Keys:
    """The ring in ``directory`` as of ``now`` (the current time by default)."""
    now = time.time() if now is None else now
    found: list[RingKey] = []
    for path in directory.glob("*.pub.pem"):
        match = _PUBLIC.fullmatch(path.name)
        if match is None:
            continue
        created, kid = int(match.group(1)), match.group(2)
        stem = f"{created}-{kid}"
        retire_path = directory / f"{stem}.retire"
        try:
            retire_at = float(retire_path.read_text()) if retire_path.exists() else None
            public_pem = path.read_bytes()
        except (OSError, ValueError):
            continue  # being written or removed right now: the next look sees it whole
        found.append(RingKey(kid, created, public_pem, retire_at))
    found.sort(key=lambda key: (key.created, key.kid), reverse=True)
    verifying = tuple(k for k in found if k.retire_at is None or k.retire_at > now)
    signing = None
    for key in found[:1]:
        private_path = directory / f"{key.created}-{key.kid}.key.pem"
        try:
            private = serialization.load_pem_private_key(private_path.read_bytes(), None)
        except (OSError, ValueError):
            break
        if isinstance(private, ed25519.Ed25519PrivateKey):
            signing = (key.kid, private)
    return Keys(verifying, signing)


def add_key(directory: pathlib.Path, private: ed25519.Ed25519PrivateKey | None = None,
            created: int | None = None) -> str:  # fmt: skip
    """Put a new key (``private``, or a fresh one) into the ring; its key id."""
    directory.mkdir(parents=True, exist_ok=True)
    private = private or ed25519.Ed25519PrivateKey.generate()
    public_pem = _public_pem(private)
    kid = key_id(public_pem)
    stem = f"{int(time.time()) if created is None else created}-{kid}"
    _write(directory / f"{stem}.key.pem", _private_pem(private), 0o600)
    _write(directory / f"{stem}.pub.pem", public_pem, 0o644)
    return kid


def ensure_ring(directory: pathlib.Path) -> Keys:
    """A ring in ``directory`` with a signing key (made on first use; a key pair that
    :func:`services.common.auth.ensure_keypair` made there becomes its first key, so the
    tokens it signed keep verifying)."""
    keys = read(directory)
    if keys.signing is not None:
        return keys
    legacy = directory / _LEGACY_PRIVATE
    private = None
    created = None
    if legacy.exists():
        loaded = serialization.load_pem_private_key(legacy.read_bytes(), None)
        if isinstance(loaded, ed25519.Ed25519PrivateKey):
            private, created = loaded, int(legacy.stat().st_mtime)
    add_key(directory, private, created)
    return read(directory)


def signing_files(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The private and public key files of the ring's signing key (the ring made first if
    need be): for tools that sign or verify as the system does (the benchmarks)."""
    keys = ensure_ring(directory)
    assert keys.signing is not None
    kid = keys.signing[0]
    (public,) = directory.glob(f"*-{kid}.pub.pem")
    return public.with_name(public.name.removesuffix(".pub.pem") + ".key.pem"), public


def rotate(directory: pathlib.Path, *, token_ttl_seconds: int, now: float | None = None) -> str:
    """Add a new signing key; retire the others once the tokens they signed have expired.

    Every key without a retirement gets one (``now`` + the token lifetime + a margin) and
    loses its private file; keys past their retirement are deleted. The new key id.
    """
    now = time.time() if now is None else now
    before = read(directory, now)
    kid = add_key(directory, created=max([int(now)] + [k.created + 1 for k in before.verifying]))
    retire_at = now + token_ttl_seconds + RETIRE_MARGIN_SECONDS
    for path in directory.glob("*.pub.pem"):
        match = _PUBLIC.fullmatch(path.name)
        if match is None or match.group(2) == kid:
            continue
        stem = path.name.removesuffix(".pub.pem")
        retire_path = directory / f"{stem}.retire"
        (directory / f"{stem}.key.pem").unlink(missing_ok=True)
        if not retire_path.exists():
            _write(retire_path, f"{retire_at:.0f}\n".encode(), 0o644)
        elif float(retire_path.read_text()) <= now:
            path.unlink(missing_ok=True)
            retire_path.unlink(missing_ok=True)
    return kid


class KeyRing:
    """A key ring directory, read again when its files change (at most once a second)."""

    def __init__(self, directory: pathlib.Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = 0.0
        self._listing: tuple[tuple[str, int], ...] = ()
        self._keys = Keys((), None)
        self.keys()

    def _list(self) -> tuple[tuple[str, int], ...]:
        try:
            return tuple(
                sorted(
                    (entry.name, entry.stat().st_mtime_ns) for entry in os.scandir(self.directory)
                )
            )
        except OSError:
            return ()

    def keys(self) -> Keys:
        """The ring as it is now (re-read when a file changed, or a retirement passed)."""
        now = self._clock()
        with self._lock:
            if now - self._checked < RELOAD_SECONDS:
                return self._keys
            self._checked = now
            listing = self._list()
            expired = any(
                k.retire_at is not None and k.retire_at <= now for k in self._keys.verifying
            )
            if listing != self._listing or expired:
                self._listing = listing
                self._keys = read(self.directory, now)
            return self._keys


class SingleKey:
    """One public key file as a ring that never rotates (the containers' setting)."""

    def __init__(self, public_key_pem: bytes) -> None:
        self._keys = Keys((RingKey(key_id(public_key_pem), 0, public_key_pem, None),), None)

    def keys(self) -> Keys:
        return self._keys
