"""Account rules (emails, names, passwords, roles) and the use cases around them, run
against an in-memory unit of work and a real (light) argon2 hasher."""

from __future__ import annotations

import dataclasses
import datetime as dt
from types import TracebackType
from typing import Any, Self

import pytest

from services.common.auth import TokenVerifier
from services.common.context import Principal, RequestContext, Role
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Violations,
)
from services.common.handled_calls import HandledCalls
from services.common.idempotency import RequestRecord
from services.common.settings import Argon2Parameters
from services.user.domain import (
    EmailTaken,
    OwnedMovie,
    RefreshUse,
    Session,
    User,
    UserFields,
    check_display_name,
    check_email,
    check_password,
    email_key,
    parse_role,
)
from services.user.passwords import PasswordHasher
from services.user.repository import MailQueue, RegistrationRepository
from services.user.service import UserService
from tests.support.tokens import SigningKeys
from tests.unit.fake_events import MemoryInbox, RecordingOutbox

# --- domain rules ------------------------------------------------------------------------


def violations_of(check: object, value: str) -> list[str]:
    violations = Violations()
    check(value, "f", violations)  # type: ignore[operator]
    return [v.description for v in violations.items]


@pytest.mark.parametrize(
    "email",
    ["a@b", "ann@example.com", "Ann.Lee+films@Example.CO.UK", "x" * 64 + "@" + "d" * 180],
)
def test_plausible_emails_pass(email: str) -> None:
    assert violations_of(check_email, email) == []


@pytest.mark.parametrize(
    ("email", "words"),
    [
        ("", "required"),
        ("   ", "required"),
        ("no-at-sign", "email address"),
        ("@example.com", "email address"),
        ("ann@", "email address"),
        ("ann@@example.com", "email address"),
        ("ann@b@example.com", "email address"),
        ("ann lee@example.com", "spaces"),
        ("ann@exa\tmple.com", "spaces"),
        ("ann\x00@example.com", "control"),
        ("x" * 65 + "@example.com", "before @"),
        ("a@" + "d" * 253, "254"),
    ],
)
def test_implausible_emails_are_refused(email: str, words: str) -> None:
    found = violations_of(check_email, email)
    assert len(found) == 1 and words in found[0]


def test_emails_are_trimmed_and_compared_without_case() -> None:
    violations = Violations()
    assert check_email("  Ann@Example.COM \n", "f", violations) == "Ann@Example.COM"
    assert email_key("  Ann@Example.COM ") == email_key("ann@example.com") == "ann@example.com"


@pytest.mark.parametrize(
    ("name", "ok"), [("A", True), ("x" * 100, True), ("", False), (" ", False), ("x" * 101, False)]
)
def test_display_name_length(name: str, ok: bool) -> None:
    assert (violations_of(check_display_name, name) == []) is ok


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("1234567", False),
        ("12345678", True),
        ("        ", True),
        ("p" * 256, True),
        ("p" * 257, False),
        ("", False),
    ],
)
def test_password_length(password: str, ok: bool) -> None:
    assert (violations_of(check_password, password) == []) is ok


def test_password_descriptions_never_repeat_the_password() -> None:
    for password in ("short", "p" * 300):
        for description in violations_of(check_password, password):
            assert password not in description


@pytest.mark.parametrize(
    ("raw", "role", "ok"),
    [
        ("", Role.USER, True),
        ("user", Role.USER, True),
        ("admin", Role.ADMIN, True),
        ("7", Role.USER, False),
    ],
)
def test_parse_role(raw: str, role: Role, ok: bool) -> None:
    violations = Violations()
    assert parse_role(raw, "user.role", violations) is role
    assert (not violations.items) is ok


def test_a_user_repr_hides_the_hash() -> None:
    now = dt.datetime.now(dt.UTC)
    user = User("id", "a@b", "A", Role.USER, "$argon2id$secret", now, now)
    assert "$argon2id" not in repr(user)
    assert "hunter22" not in repr(UserFields(password="hunter22", current_password="hunter22"))


# --- use cases with an in-memory unit of work --------------------------------------------


class MemoryUsers:
    """The repository protocol over a dict (what the SQL version does, minus SQL)."""

    def __init__(self, rows: dict[str, User]) -> None:
        self.rows = rows

    def _taken(self, user: User) -> bool:
        key = email_key(user.email)
        return any(email_key(u.email) == key and u.id != user.id for u in self.rows.values())

    def add(self, user: User, request: RequestRecord | None = None) -> None:
        if self._taken(user):
            raise EmailTaken()
        self.rows[user.id] = user

    def find_by_request_key(self, key: str) -> tuple[User, str] | None:
        return None  # these tests make no keyed creates

    def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        return self.rows.get(user_id)

    def get_by_email(self, key: str) -> User | None:
        return next((u for u in self.rows.values() if email_key(u.email) == key), None)

    def list_page(self, after_id: str | None, limit: int) -> list[User]:
        ids = sorted(i for i in self.rows if after_id is None or i > after_id)
        return [self.rows[i] for i in ids[:limit]]

    def save(self, user: User) -> None:
        if self._taken(user):
            raise EmailTaken()
        self.rows[user.id] = user

    def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        user = self.rows.get(user_id)
        if user is None or user.password_hash != old_hash:
            return False
        self.rows[user_id] = dataclasses.replace(user, password_hash=new_hash)
        return True

    def delete(self, user_id: str) -> bool:
        return self.rows.pop(user_id, None) is not None

    def admin_exists(self) -> bool:
        return any(u.is_admin for u in self.rows.values())

    def lock_admin_ids(self) -> list[str]:
        return sorted(u.id for u in self.rows.values() if u.is_admin)


class MemoryLibrary:
    """The library is not what these tests are about: it only has to exist."""

    def add_purchase(self, *args: object) -> None:
        pass

    def rename(self, *args: object) -> None:
        pass

    def list_page(self, user_id: str, before_id: str | None, limit: int) -> list[OwnedMovie]:
        return []

    def forget_user(self, user_id: str) -> None:
        pass


class MemorySessions:
    """Sessions are covered by the integration tests; here they only have to be kept."""

    def __init__(self) -> None:
        self.rows: dict[str, Session] = {}
        #: hash -> [session id, used, the call that used it, the token it replaced]
        self.tokens: dict[str, list[Any]] = {}

    def add(self, session: Session) -> None:
        self.rows[session.id] = session

    def get(self, session_id: str, *, for_update: bool = False) -> Session | None:
        return self.rows.get(session_id)

    def live_of_user(self, user_id: str, now: dt.datetime) -> list[Session]:
        return [s for s in self.rows.values() if s.user_id == user_id and s.live(now)]

    def list_live(
        self, user_id: str, before_id: str | None, limit: int, now: dt.datetime
    ) -> list[Session]:
        return self.live_of_user(user_id, now)[:limit]

    def revoke(self, session_id: str, now: dt.datetime, reason: str) -> bool:
        session = self.rows.get(session_id)
        if session is None or session.revoke_time is not None:
            return False
        self.rows[session_id] = dataclasses.replace(session, revoke_time=now)
        return True

    def touch(self, session_id: str, now: dt.datetime) -> None:
        pass

    def add_refresh_token(
        self, token_hash: str, session_id: str, now: dt.datetime, parent_hash: str | None = None
    ) -> None:
        self.tokens[token_hash] = [session_id, False, None, parent_hash]

    def use_refresh_token(
        self, token_hash: str, now: dt.datetime, call_id: str | None
    ) -> tuple[str, RefreshUse] | None:
        found = self.tokens.get(token_hash)
        if found is None:
            return None
        session_id, used, use_call, _ = found
        if not used:
            found[1:3] = [True, call_id]
            return session_id, RefreshUse.FIRST
        if call_id is not None and use_call == call_id:
            return session_id, RefreshUse.REPEAT
        return session_id, RefreshUse.REUSED

    def retire_unused_child(self, parent_hash: str, now: dt.datetime) -> bool:
        for token in self.tokens.values():
            if token[3] == parent_hash and not token[1]:
                token[1] = True
                return True
        return False


class MemoryLoginFailures:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, dt.datetime]] = {}

    def get(self, email_key: str) -> tuple[int, dt.datetime] | None:
        return self.rows.get(email_key)

    def record(self, email_key: str, failures: int, now: dt.datetime) -> None:
        self.rows[email_key] = (failures, now)

    def clear(self, email_key: str) -> None:
        self.rows.pop(email_key, None)


class MemoryUnitOfWork:
    """Commits by copying the working set back; a rollback drops it."""

    #: Never set: these tests make no call through the gateway (no call id), so nothing
    #: is recorded (services/common/handled_calls.py; tests/integration/test_repeated_calls.py).
    calls: HandledCalls
    #: Never set: these tests make accounts outside a call, at once; a registration and its
    #: mailed link are tested on real databases (tests/integration/test_registration.py).
    registrations: RegistrationRepository
    mail: MailQueue

    def __init__(self, store: dict[str, User], read_only: bool = False) -> None:
        self._store = store
        self.users = MemoryUsers(dict(store))
        self.library = MemoryLibrary()
        self.sessions = MemorySessions()
        self.login_failures = MemoryLoginFailures()
        self.outbox = RecordingOutbox()
        self.inbox = MemoryInbox()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pass

    def commit(self) -> None:
        self._store.clear()
        self._store.update(self.users.rows)


class CountingHasher(PasswordHasher):
    """The real hasher, counting the argon2 verifications it performs."""

    verifications = 0

    def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return super().verify(password_hash, password)


LIGHT = Argon2Parameters(time_cost=1, memory_kib=1024, parallelism=1)
DEFAULT_PASSWORD = "password-1"


@pytest.fixture
def store() -> dict[str, User]:
    return {}


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher(LIGHT)


@pytest.fixture
def service(store: dict[str, User], keys: SigningKeys, hasher: CountingHasher) -> UserService:
    return UserService(
        lambda read_only=False: MemoryUnitOfWork(store, read_only), hasher, keys.issuer
    )


def as_caller(user: User) -> RequestContext:
    return RequestContext(principal=Principal(user.id, user.role))


def register(service: UserService, email: str, password: str = DEFAULT_PASSWORD) -> User:
    user = service.create_user(UserFields(email=email, display_name="Someone", password=password))
    assert isinstance(user, User), "outside a call, the account is made at once"
    return user


def test_register_normalises_and_hashes(service: UserService) -> None:
    user = register(service, "  Ann@Example.com ")
    assert user.email == "Ann@Example.com" and user.role is Role.USER
    assert user.password_hash.startswith("$argon2id$")
    with pytest.raises(EmailTaken):
        register(service, "ANN@example.COM")


def test_register_refuses_the_admin_role(service: UserService, store: dict[str, User]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        service.create_user(
            UserFields(email="a@b", display_name="A", password="password-1", role="admin")
        )
    assert [v.field for v in caught.value.violations] == ["user.role"]
    assert store == {}


def test_login_does_the_same_work_for_unknown_email_and_wrong_password(
    service: UserService, hasher: CountingHasher, keys: SigningKeys
) -> None:
    register(service, "ann@example.com", "right-password")
    errors = []
    for email, password in [
        ("nobody@example.com", "right-password"),
        ("ann@example.com", "wrong!!!"),
    ]:
        before = hasher.verifications
        with pytest.raises(Unauthenticated) as caught:
            service.login(email, password)
        assert hasher.verifications - before == 1, "exactly one argon2 verification each"
        errors.append((caught.value.message, caught.value.reason))
    assert errors[0] == errors[1] == ("wrong email or password", "INVALID_CREDENTIALS")

    grant = service.login(" ANN@example.com", "right-password")
    verifier = TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")
    principal = verifier.verify(grant.access_token)
    assert principal.role is Role.USER
    assert grant.expires_in == 900
    assert "access_token" not in repr(grant) and grant.access_token not in repr(grant)


def test_login_upgrades_an_old_hash(service: UserService, store: dict[str, User]) -> None:
    user = register(service, "ann@example.com", "right-password")
    weaker = PasswordHasher(Argon2Parameters(time_cost=1, memory_kib=512, parallelism=1))
    store[user.id] = dataclasses.replace(user, password_hash=weaker.hash("right-password"))
    service.login("ann@example.com", "right-password")
    upgraded = store[user.id].password_hash
    assert "m=1024," in upgraded and upgraded != user.password_hash
    assert store[user.id].update_time == user.update_time, "an upgrade is not a change"
    service.login("ann@example.com", "right-password")
    assert store[user.id].password_hash == upgraded, "a current hash is left alone"


def test_change_own_password_needs_the_current_one(service: UserService) -> None:
    ann = register(service, "ann@example.com", "old-password")
    new = UserFields(password="new-password")
    for current, reason in [
        ("", "INVALID_ARGUMENT"),
        ("wrong-password", "CURRENT_PASSWORD_MISMATCH"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            service.update_user(
                ann.id,
                dataclasses.replace(new, current_password=current),
                ["password"],
                [],
                as_caller(ann),
            )
        assert [v.field for v in caught.value.violations] == ["user.current_password"]
        assert caught.value.reason == reason
    service.update_user(
        ann.id,
        dataclasses.replace(new, current_password="old-password"),
        ["password"],
        [],
        as_caller(ann),
    )
    service.login("ann@example.com", "new-password")


def test_roles_last_admin_and_stale_admin_tokens(
    service: UserService, store: dict[str, User]
) -> None:
    boss = service.ensure_first_admin("boss@example.com", "boss-password")
    assert boss is not None and boss.is_admin
    assert service.ensure_first_admin("other@example.com", "other-password") is None
    ann = register(service, "ann@example.com")

    with pytest.raises(PermissionDenied):
        service.update_user(ann.id, UserFields(role="admin"), ["role"], [], as_caller(ann))
    # Echoing the unchanged role back is no change and needs no admin.
    service.update_user(ann.id, UserFields(role="user"), ["role"], [], as_caller(ann))

    with pytest.raises(FailedPrecondition):
        service.update_user(boss.id, UserFields(role="user"), ["role"], [], as_caller(boss))
    with pytest.raises(FailedPrecondition):
        service.delete_user(boss.id, as_caller(boss))

    service.update_user(ann.id, UserFields(role="admin"), ["role"], [], as_caller(boss))
    assert store[ann.id].is_admin
    # Demoted, boss still holds an admin token: it no longer grants roles.
    stale = as_caller(boss)
    service.update_user(boss.id, UserFields(role="user"), ["role"], [], stale)
    with pytest.raises(PermissionDenied):
        service.update_user(boss.id, UserFields(role="admin"), ["role"], [], stale)
    # Now ann is the last admin; she may delete boss, not herself.
    service.delete_user(boss.id, as_caller(store[ann.id]))
    with pytest.raises(FailedPrecondition):
        service.delete_user(ann.id, as_caller(store[ann.id]))
    with pytest.raises(NotFound):
        service.get_user(boss.id, as_caller(store[ann.id]))


def test_first_admin_email_taken_by_a_user_is_refused(service: UserService) -> None:
    register(service, "boss@example.com")
    with pytest.raises(FailedPrecondition):
        service.ensure_first_admin("BOSS@example.com", "boss-password")
    with pytest.raises(InvalidArgument) as caught:
        service.ensure_first_admin("not an email", "short")
    assert {v.field for v in caught.value.violations} == {
        "CINEMA_ADMIN_EMAIL",
        "CINEMA_ADMIN_PASSWORD",
    }
