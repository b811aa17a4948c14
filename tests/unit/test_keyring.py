"""The key ring's rules (services/common/keyring.py): which key signs, which verify, when a
retired key leaves; and the login throttle's waits (services/user/domain.py)."""

from __future__ import annotations

import datetime as dt
import pathlib

from services.common import keyring
from services.common.auth import TokenIssuer, TokenVerifier, ensure_keypair
from services.common.context import Role
from services.user.domain import THROTTLE_AFTER, login_wait


def test_a_new_ring_signs_with_its_one_key(tmp_path: pathlib.Path) -> None:
    keys = keyring.ensure_ring(tmp_path)
    assert keys.signing is not None
    assert [k.kid for k in keys.verifying] == [keys.signing[0]]
    assert keyring.ensure_ring(tmp_path).signing[0] == keys.signing[0]  # type: ignore[index]
    (private,) = tmp_path.glob("*.key.pem")
    assert private.stat().st_mode & 0o777 == 0o600


def test_a_key_pair_of_ensure_keypair_becomes_the_first_key(tmp_path: pathlib.Path) -> None:
    _, public_path = ensure_keypair(tmp_path)
    keys = keyring.ensure_ring(tmp_path)
    assert [k.public_pem for k in keys.verifying] == [public_path.read_bytes()]


def test_rotation_signs_with_the_new_key_and_retires_the_old_after_the_ttl(
    tmp_path: pathlib.Path,
) -> None:
    old = keyring.ensure_ring(tmp_path).signing[0]  # type: ignore[index]
    now = 2_000_000_000.0
    new = keyring.rotate(tmp_path, token_ttl_seconds=300, now=now)
    assert new != old
    during = keyring.read(tmp_path, now + 300)
    assert during.signing is not None and during.signing[0] == new
    assert [k.kid for k in during.verifying] == [new, old]
    retire = now + 300 + keyring.RETIRE_MARGIN_SECONDS
    assert [k.kid for k in keyring.read(tmp_path, retire + 1).verifying] == [new]
    assert len(list(tmp_path.glob("*.key.pem"))) == 1  # only the signing key's private file
    # The next rotation after the retirement deletes the old key's files.
    keyring.rotate(tmp_path, token_ttl_seconds=300, now=retire + 1)
    assert not list(tmp_path.glob(f"*-{old}.*"))


def test_tokens_follow_the_ring_without_new_objects(tmp_path: pathlib.Path) -> None:
    keyring.ensure_ring(tmp_path)
    clock = [1_000.0]
    ring = keyring.KeyRing(tmp_path, clock=lambda: clock[0])
    issuer = TokenIssuer.from_ring(ring, issuer="cinema", audience="cinema", ttl_seconds=300)
    verifier = TokenVerifier.from_ring(ring, issuer="cinema", audience="cinema")
    before = issuer.issue("u-1", Role.USER, session_id="s-1")
    assert verifier.verify(before.token).session_id == "s-1"
    new = keyring.rotate(tmp_path, token_ttl_seconds=300)
    clock[0] += keyring.RELOAD_SECONDS  # the ring looks again
    assert issuer.kid == new
    after = issuer.issue("u-1", Role.USER)
    assert verifier.verify(after.token).subject == "u-1"
    assert verifier.verify(before.token).subject == "u-1"  # the old key still verifies


def test_the_login_throttle_waits_longer_after_each_failure_and_forgets() -> None:
    last = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    assert login_wait(THROTTLE_AFTER - 1, last, last) == 0
    assert login_wait(THROTTLE_AFTER, last, last) == 1
    assert login_wait(THROTTLE_AFTER + 4, last, last) == 5
    assert login_wait(THROTTLE_AFTER + 4, last, last + dt.timedelta(seconds=2)) == 3
    assert login_wait(10_000, last, last) == 60  # never more than a minute
    assert login_wait(10_000, last, last + dt.timedelta(minutes=16)) == 0
