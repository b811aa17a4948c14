"""Password hashing: argon2id with the configured cost, salted, upgraded when the cost
changes, and never a match for a damaged hash or the dummy."""

from __future__ import annotations

import time

import pytest
from argon2 import Type, extract_parameters

from services.common.errors import ResourceExhausted
from services.common.settings import Argon2Parameters
from services.user.passwords import PasswordHasher

LIGHT = Argon2Parameters(time_cost=1, memory_kib=1024, parallelism=1)
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(LIGHT)


def test_hash_is_argon2id_with_the_configured_cost(hasher: PasswordHasher) -> None:
    stored = hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    parameters = extract_parameters(stored)
    assert parameters.type is Type.ID
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (1, 1024, 1)
    assert PASSWORD not in stored


def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    assert hasher.hash(PASSWORD) != hasher.hash(PASSWORD)


def test_verify_accepts_the_password_and_nothing_else(hasher: PasswordHasher) -> None:
    stored = hasher.hash(PASSWORD)
    assert hasher.verify(stored, PASSWORD)
    assert not hasher.verify(stored, PASSWORD.upper())
    assert not hasher.verify(stored, PASSWORD + " ")
    assert not hasher.verify(stored, "")


@pytest.mark.parametrize("password", ["pässwörd-ünïcode", "🎬" * 64, "x" * 256, "  spaced  "])
def test_any_password_round_trips(hasher: PasswordHasher, password: str) -> None:
    assert hasher.verify(hasher.hash(password), password)


@pytest.mark.parametrize("damaged", ["", "plain", "$argon2id$v=19$m=1024,t=1,p=1$bad", "$2b$12$x"])
def test_a_damaged_hash_never_matches(hasher: PasswordHasher, damaged: str) -> None:
    assert not hasher.verify(damaged, PASSWORD)
    assert hasher.needs_rehash(damaged)


def test_the_dummy_never_matches(hasher: PasswordHasher) -> None:
    assert hasher.verify_dummy(PASSWORD) is False
    assert hasher.verify_dummy("") is False


def test_rehash_is_needed_when_the_cost_changes(hasher: PasswordHasher) -> None:
    old = hasher.hash(PASSWORD)
    assert not hasher.needs_rehash(old)
    stronger = PasswordHasher(Argon2Parameters(time_cost=2, memory_kib=2048, parallelism=1))
    assert stronger.needs_rehash(old)
    # The old hash still verifies under the new parameters: it names its own.
    assert stronger.verify(old, PASSWORD)
    assert not stronger.needs_rehash(stronger.hash(PASSWORD))


def test_production_defaults_are_argon2_cffi_defaults() -> None:
    defaults = Argon2Parameters()
    assert (defaults.time_cost, defaults.memory_kib, defaults.parallelism) == (3, 65536, 4)


def test_checks_beyond_the_limit_are_refused_at_once_not_queued() -> None:
    hasher = PasswordHasher(LIGHT, max_concurrent=2)
    stored = hasher.hash(PASSWORD)
    with hasher._slot(), hasher._slot():  # two checks in progress
        started = time.monotonic()
        with pytest.raises(ResourceExhausted) as refused:
            hasher.verify(stored, PASSWORD)
        assert refused.value.reason == "PASSWORD_CHECKS_BUSY"
        assert time.monotonic() - started < 0.05, "refused at once, not after a wait"
        with pytest.raises(ResourceExhausted):
            hasher.hash(PASSWORD)
    # The slots are given back: checks work again.
    assert hasher.verify(stored, PASSWORD)
    with pytest.raises(ValueError, match="at least 1"):
        PasswordHasher(LIGHT, max_concurrent=0)
