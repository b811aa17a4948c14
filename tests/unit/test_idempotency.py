"""Idempotent creates (services/common/idempotency.py): keys, fingerprints, the error for a
reused key, and the create-at-most-once flow, with fakes in place of the database."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import IntegrityError

from services.cast.models import CastRow
from services.common import idempotency
from services.common.context import CALL_ID_MAX, Role
from services.common.errors import AlreadyExists, InvalidArgument, Violations
from services.common.idempotency import (
    DuplicateRequestKey,
    IdempotencyKey,
    IdempotencyKeyReused,
    KeySource,
    RequestRecord,
    create_once,
    fingerprint,
    is_unique_violation,
    request_key,
)
from services.common.status import status_code_for
from services.movie.models import MovieRow
from services.order import domain as order_domain
from services.user.domain import CheckedFields
from services.user.models import UserRow
from services.user.service import _request_hash as user_request_hash

# --- keys --------------------------------------------------------------------------------


def key_of(request_id: str, call_id: str | None = None) -> tuple[IdempotencyKey | None, Violations]:
    violations = Violations()
    return request_key(request_id, call_id, violations), violations


def test_the_clients_request_id_wins_over_the_call_id() -> None:
    key, violations = key_of("3f2c-uuid", "envoy-call-1")
    assert key == IdempotencyKey(KeySource.REQUEST, "3f2c-uuid")
    assert key.stored == "request:3f2c-uuid"
    assert violations.items == []


def test_without_a_request_id_the_gateways_call_id_is_the_key() -> None:
    key, _ = key_of("", "envoy-call-1")
    assert key is not None and key.stored == "call:envoy-call-1"


def test_without_either_there_is_no_key() -> None:
    assert key_of("", None)[0] is None
    assert key_of("", "")[0] is None


def test_a_call_id_too_long_for_the_column_is_not_a_key() -> None:
    assert key_of("", "c" * (CALL_ID_MAX + 1))[0] is None


def test_the_two_namespaces_never_collide() -> None:
    # A client that sends another call's id (or "call:..." itself) as its request_id
    # still gets a key of its own.
    by_call, _ = key_of("", "abc")
    by_request, _ = key_of("abc")
    spoofed, _ = key_of("call:abc")
    assert by_call is not None and by_request is not None and spoofed is not None
    assert len({by_call.stored, by_request.stored, spoofed.stored}) == 3


@pytest.mark.parametrize(
    ("request_id", "problem"),
    [("   ", "must not be blank"), ("\t\n", "must not be blank"), ("x" * 101, "at most 100")],
)
def test_a_bad_request_id_is_a_field_violation(request_id: str, problem: str) -> None:
    _, violations = key_of(request_id, "envoy-call-1")
    [violation] = violations.items
    assert violation.field == "request_id" and problem in violation.description
    with pytest.raises(InvalidArgument):
        violations.raise_if_any()


def test_a_request_id_is_opaque_and_may_have_100_characters() -> None:
    key, violations = key_of(" Padded Key ")
    assert key is not None and key.value == " Padded Key ", "neither trimmed nor folded"
    key, violations = key_of("x" * 100)
    assert key is not None and violations.items == []


def test_the_longest_keys_fit_the_columns() -> None:
    longest = max(
        IdempotencyKey(KeySource.REQUEST, "r" * idempotency.REQUEST_ID_MAX).stored,
        IdempotencyKey(KeySource.CALL, "c" * CALL_ID_MAX).stored,
        key=len,
    )
    assert len(longest) <= idempotency.REQUEST_KEY_MAX
    for row in (MovieRow, CastRow, UserRow):
        columns = row.__table__.c
        key_type, hash_type = columns.request_key.type, columns.request_hash.type
        assert isinstance(key_type, String) and isinstance(hash_type, String)
        assert key_type.length == idempotency.REQUEST_KEY_MAX
        assert hash_type.length == len(fingerprint({}))
        assert columns.request_key.nullable and columns.request_hash.nullable


def test_order_keeps_the_same_limit_and_reason() -> None:
    # CreateOrder's own check predates the shared one (services/order/domain.py).
    assert order_domain.REQUEST_ID_MAX == idempotency.REQUEST_ID_MAX
    assert order_domain.REASON_KEY_REUSED == idempotency.REASON_KEY_REUSED


# --- fingerprints --------------------------------------------------------------------------


def test_a_fingerprint_is_a_sha256_of_the_fields_in_any_order() -> None:
    first = fingerprint({"title": "Alien", "genres": ["horror", "sci-fi"], "plot": None})
    assert first == fingerprint({"plot": None, "genres": ["horror", "sci-fi"], "title": "Alien"})
    assert len(first) == 64 and int(first, 16) >= 0
    assert first != fingerprint({"title": "Alien", "genres": ["sci-fi", "horror"], "plot": None})
    assert first != fingerprint({"title": "Alien", "genres": ["horror", "sci-fi"], "plot": ""})
    assert fingerprint({"name": "Zoë"}) != fingerprint({"name": "Zoe"})


def test_a_users_fingerprint_leaves_the_password_out() -> None:
    def fields(password: str) -> CheckedFields:
        return CheckedFields("Ann@example.com", "Ann", password, Role.USER)

    assert user_request_hash(fields("password-1")) == user_request_hash(fields("password-2"))
    assert user_request_hash(fields("password-1")) != user_request_hash(
        dataclasses.replace(fields("password-1"), display_name="Anne")
    )


# --- the error for a reused key ------------------------------------------------------------


def test_a_reused_request_id_is_already_exists_with_its_reason() -> None:
    error = IdempotencyKeyReused(IdempotencyKey(KeySource.REQUEST, "k-1"), "movie", "m-1")
    assert status_code_for(error) is grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert "request_id 'k-1'" in error.message
    assert error.metadata == {"resource_type": "movie", "request_id": "k-1", "movie_id": "m-1"}


def test_a_reused_call_id_names_the_call_and_may_hide_the_resource() -> None:
    error = IdempotencyKeyReused(IdempotencyKey(KeySource.CALL, "c-1"), "user", None)
    assert "x-cinema-call-id" in error.message
    assert error.metadata == {"resource_type": "user", "call_id": "c-1"}


# --- unique violations ---------------------------------------------------------------------


def sqlite_violation(row: dict[str, object]) -> IntegrityError:
    engine = create_engine("sqlite://")
    table = Table(
        "things",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("email_key", String, unique=True),
        Column("request_key", String, unique=True),
    )
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(table), {"id": 1, "email_key": "a", "request_key": "k"})
        with pytest.raises(IntegrityError) as caught:
            connection.execute(insert(table), row)
    return caught.value


def test_sqlite_violations_are_told_apart_by_column() -> None:
    error = sqlite_violation({"id": 2, "email_key": "b", "request_key": "k"})
    assert is_unique_violation(
        error, constraint="uq_things_request_key", column="things.request_key"
    )
    assert not is_unique_violation(
        error, constraint="uq_things_email_key", column="things.email_key"
    )
    error = sqlite_violation({"id": 3, "email_key": "a", "request_key": None})
    assert is_unique_violation(error, constraint="uq_things_email_key", column="things.email_key")
    assert not is_unique_violation(
        error, constraint="uq_things_request_key", column="things.request_key"
    )


def test_postgresql_violations_are_told_apart_by_constraint_name_not_message() -> None:
    @dataclass
    class Diag:
        constraint_name: str

    class UniqueViolation(Exception):
        diag = Diag("uq_users_request_key")

    # The message quotes the duplicate value, which here spells the other constraint.
    orig = UniqueViolation('... "uq_users_request_key" DETAIL: Key (request_key)=(email_key)')
    error = IntegrityError("INSERT", {}, orig)
    assert is_unique_violation(error, constraint="uq_users_request_key", column="users.request_key")
    assert not is_unique_violation(error, constraint="uq_users_email_key", column="users.email_key")


# --- create at most once -------------------------------------------------------------------


@dataclass(frozen=True)
class Thing:
    id: str


RECORD = RequestRecord(IdempotencyKey(KeySource.REQUEST, "k-1"), fingerprint({"n": 1}))
Found = tuple[Thing, str] | None


class Store:
    """The key -> (thing, hash) a repository would keep, and how often it was asked."""

    def __init__(self, *answers: Found) -> None:
        self.answers = list(answers)
        self.lookups = 0

    def find(self, key: str) -> Found:
        assert key == "request:k-1"
        self.lookups += 1
        return self.answers.pop(0)


def failing(error: Exception) -> Callable[[], Thing]:
    def create() -> Thing:
        raise error

    return create


def test_without_a_key_it_just_creates() -> None:
    store = Store()
    assert create_once(None, "thing", find=store.find, create=lambda: Thing("new")) == Thing("new")
    assert store.lookups == 0


def test_a_first_call_creates_after_one_lookup() -> None:
    store = Store(None)
    assert create_once(RECORD, "thing", find=store.find, create=lambda: Thing("new")) == Thing(
        "new"
    )
    assert store.lookups == 1


def test_a_repeat_answers_the_stored_resource_without_creating() -> None:
    store = Store((Thing("first"), RECORD.request_hash))
    created = create_once(RECORD, "thing", find=store.find, create=failing(AssertionError()))
    assert created == Thing("first")


def test_a_repeat_that_asks_otherwise_is_refused() -> None:
    store = Store((Thing("first"), fingerprint({"n": 2})))
    with pytest.raises(IdempotencyKeyReused) as caught:
        create_once(RECORD, "thing", find=store.find, create=failing(AssertionError()))
    assert caught.value.metadata["thing_id"] == "first"
    store = Store((Thing("first"), fingerprint({"n": 2})))
    with pytest.raises(IdempotencyKeyReused) as hidden:
        create_once(
            RECORD, "thing", find=store.find, create=failing(AssertionError()), reveal_id=False
        )
    assert "thing_id" not in hidden.value.metadata


def test_the_loser_of_a_race_answers_the_winners_resource() -> None:
    store = Store(None, (Thing("winner"), RECORD.request_hash))
    created = create_once(RECORD, "thing", find=store.find, create=failing(DuplicateRequestKey()))
    assert created == Thing("winner") and store.lookups == 2


def test_the_loser_of_a_race_that_asked_otherwise_is_refused() -> None:
    store = Store(None, (Thing("winner"), fingerprint({"n": 2})))
    with pytest.raises(IdempotencyKeyReused):
        create_once(RECORD, "thing", find=store.find, create=failing(DuplicateRequestKey()))


def test_a_race_reported_on_another_unique_field_is_still_a_replay() -> None:
    # Both the email and the key of the winner's account are duplicates; the database
    # may report either.
    store = Store(None, (Thing("winner"), RECORD.request_hash))
    taken = AlreadyExists("email taken", reason="EMAIL_TAKEN")
    assert create_once(RECORD, "thing", find=store.find, create=failing(taken)) == Thing("winner")


def test_a_conflict_of_its_own_is_raised_as_it_is() -> None:
    store = Store(None, None)
    taken = AlreadyExists("email taken", reason="EMAIL_TAKEN")
    with pytest.raises(AlreadyExists) as caught:
        create_once(RECORD, "thing", find=store.find, create=failing(taken))
    assert caught.value is taken


def test_a_duplicate_key_that_cannot_be_read_back_is_an_internal_error() -> None:
    store = Store(None, None)
    with pytest.raises(RuntimeError):
        create_once(RECORD, "thing", find=store.find, create=failing(DuplicateRequestKey()))
