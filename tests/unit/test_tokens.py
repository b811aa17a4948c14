"""Access tokens: only an EdDSA token signed by our key, for our issuer and audience, with
every claim, in date, is a principal; everything else is Unauthenticated.

Forged tokens are built by hand (base64url segments), because PyJWT rightly refuses to
make some of them (an HMAC keyed with a PEM public key).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.common.auth import TokenIssuer, TokenVerifier, key_id
from services.common.context import Principal, Role
from services.common.errors import Unauthenticated
from tests.support.tokens import SigningKeys

REQUIRED_CLAIMS = ("sub", "role", "iss", "aud", "iat", "exp", "jti")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(unb64url(header)), json.loads(unb64url(payload)), signature


@pytest.fixture(scope="module")
def verifier(keys: SigningKeys) -> TokenVerifier:
    return TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")


@pytest.fixture(scope="module")
def private_key(keys: SigningKeys) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(keys.private_path.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


@pytest.fixture(scope="module")
def kid(keys: SigningKeys) -> str:
    return key_id(keys.public_path.read_bytes())


def good_claims() -> dict[str, Any]:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    return {
        "sub": "user-1",
        "role": "user",
        "iss": "cinema",
        "aud": "cinema",
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
    }


def refused(verifier: TokenVerifier, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    return caught.value


# --- accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.USER, Role.ADMIN])
def test_a_good_token_gives_its_principal(
    keys: SigningKeys, verifier: TokenVerifier, kid: str, role: Role
) -> None:
    token = keys.token("user-42", role)
    header, claims, _ = segments(token)
    assert header == {"alg": "EdDSA", "kid": kid, "typ": "JWT"}
    assert set(REQUIRED_CLAIMS) <= set(claims)
    assert claims["exp"] - claims["iat"] == 900
    assert verifier.verify(token) == Principal(subject="user-42", role=role)


def test_a_token_just_past_expiry_is_accepted_within_the_clock_skew_leeway(
    keys: SigningKeys, verifier: TokenVerifier
) -> None:
    issued = keys.issuer.issue(
        "user-1", Role.USER, now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=901)
    )
    assert verifier.verify(issued.token).subject == "user-1"


# --- refused -----------------------------------------------------------------------------


def test_expired(keys: SigningKeys, verifier: TokenVerifier) -> None:
    issued = keys.issuer.issue(
        "user-1", Role.ADMIN, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    assert issued.expires_at < dt.datetime.now(dt.UTC)
    assert refused(verifier, issued.token).reason == "TOKEN_EXPIRED"


def test_tampered_signature(keys: SigningKeys, verifier: TokenVerifier) -> None:
    header, payload, signature = keys.token("user-1").split(".")
    # Change the first character: the last one may only carry padding bits.
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert refused(verifier, f"{header}.{payload}.{flipped}").reason == "TOKEN_INVALID"


def test_tampered_claims_keep_no_signature(keys: SigningKeys, verifier: TokenVerifier) -> None:
    header, payload, signature = keys.token("user-1", Role.USER).split(".")
    claims = json.loads(unb64url(payload))
    claims["role"] = "admin"
    forged = f"{header}.{b64url_json(claims)}.{signature}"
    assert refused(verifier, forged).reason == "TOKEN_INVALID"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(verifier: TokenVerifier, kid: str, alg: str) -> None:
    header = b64url_json({"alg": alg, "typ": "JWT", "kid": kid})
    claims = good_claims() | {"role": "admin"}
    assert refused(verifier, f"{header}.{b64url_json(claims)}.").reason == "TOKEN_INVALID"


@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_hmac_signed_with_the_public_key_bytes(
    keys: SigningKeys, verifier: TokenVerifier, kid: str, alg: str
) -> None:
    # The classic key-confusion attack: the public key is public, so an HMAC keyed with
    # its PEM bytes is something anyone can make.
    digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
    signing_input = (
        f"{b64url_json({'alg': alg, 'typ': 'JWT', 'kid': kid})}."
        f"{b64url_json(good_claims() | {'role': 'admin'})}"
    )
    mac = hmac.new(keys.public_path.read_bytes(), signing_input.encode(), digest).digest()
    assert refused(verifier, f"{signing_input}.{b64url(mac)}").reason == "TOKEN_INVALID"


def test_wrong_audience(keys: SigningKeys, verifier: TokenVerifier) -> None:
    other = TokenIssuer(
        keys.private_path.read_bytes(), issuer="cinema", audience="elsewhere", ttl_seconds=900
    )
    assert refused(verifier, other.issue("user-1", Role.ADMIN).token).reason == "TOKEN_INVALID"


def test_wrong_issuer(keys: SigningKeys, verifier: TokenVerifier) -> None:
    other = TokenIssuer(
        keys.private_path.read_bytes(), issuer="mallory", audience="cinema", ttl_seconds=900
    )
    assert refused(verifier, other.issue("user-1", Role.ADMIN).token).reason == "TOKEN_INVALID"


@pytest.mark.parametrize("missing", REQUIRED_CLAIMS)
def test_missing_claim(
    verifier: TokenVerifier, private_key: ed25519.Ed25519PrivateKey, kid: str, missing: str
) -> None:
    claims = {k: v for k, v in good_claims().items() if k != missing}
    token = jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": kid})
    assert refused(verifier, token).reason == "TOKEN_INVALID"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("role", "root"),
        ("role", ""),
        ("sub", ""),
        ("sub", 42),
        ("exp", "tomorrow"),
        ("aud", ["elsewhere"]),
    ],
)
def test_malformed_claim(
    verifier: TokenVerifier,
    private_key: ed25519.Ed25519PrivateKey,
    kid: str,
    claim: str,
    value: object,
) -> None:
    token = jwt.encode(
        good_claims() | {claim: value}, private_key, algorithm="EdDSA", headers={"kid": kid}
    )
    assert refused(verifier, token).reason == "TOKEN_INVALID"


def test_issued_in_the_future(
    verifier: TokenVerifier, private_key: ed25519.Ed25519PrivateKey, kid: str
) -> None:
    claims = good_claims()
    claims["iat"] += 3600
    claims["exp"] += 3600
    token = jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": kid})
    refused(verifier, token)


def _signed_by_another_key(kid_of: Callable[[str], str]) -> str:
    stranger = ed25519.Ed25519PrivateKey.generate()
    stranger_kid = key_id(
        stranger.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return jwt.encode(
        good_claims() | {"role": "admin"},
        stranger,
        algorithm="EdDSA",
        headers={"kid": kid_of(stranger_kid)},
    )


def test_unknown_kid(verifier: TokenVerifier) -> None:
    refused(verifier, _signed_by_another_key(lambda own: own))


def test_another_key_claiming_our_kid(verifier: TokenVerifier, kid: str) -> None:
    assert refused(verifier, _signed_by_another_key(lambda _: kid)).reason == "TOKEN_INVALID"


def test_no_kid(verifier: TokenVerifier, private_key: ed25519.Ed25519PrivateKey) -> None:
    refused(verifier, jwt.encode(good_claims(), private_key, algorithm="EdDSA"))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b", "....", "Bearer x.y.z"])
def test_garbage(verifier: TokenVerifier, garbage: str) -> None:
    refused(verifier, garbage)


def test_the_messages_do_not_echo_the_token(keys: SigningKeys, verifier: TokenVerifier) -> None:
    token = keys.token("user-1")
    tampered = token[:-10] + "AAAAAAAAAA"
    error = refused(verifier, tampered)
    assert tampered not in error.message and "user-1" not in error.message


# --- the cache of verified tokens ----------------------------------------------------------


def test_a_remembered_token_is_refused_once_it_expires(
    keys: SigningKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")
    issued = keys.issuer.issue("user-1", Role.USER)
    assert verifier.verify(issued.token) == Principal("user-1", Role.USER)
    assert verifier.verify(issued.token) == Principal("user-1", Role.USER)  # from the cache
    later = issued.expires_at.timestamp() + 60
    monkeypatch.setattr("services.common.auth.time.time", lambda: later)
    error = refused(verifier, issued.token)
    assert error.reason == "TOKEN_EXPIRED"


def test_a_remembered_token_does_not_vouch_for_another_string(keys: SigningKeys) -> None:
    verifier = TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")
    token = keys.token("user-2", Role.USER)
    verifier.verify(token)
    header, payload, signature = token.split(".")
    claims = json.loads(unb64url(payload))
    claims["role"] = "admin"
    refused(verifier, f"{header}.{b64url_json(claims)}.{signature}")
    refused(verifier, token + "x")


def test_the_cache_is_bounded(keys: SigningKeys) -> None:
    verifier = TokenVerifier(
        keys.public_path.read_bytes(), issuer="cinema", audience="cinema", cache_size=3
    )
    tokens = [keys.token(f"user-{i}", Role.USER) for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == 3
    assert list(verifier._verified) == tokens[2:]
