"""The user service over gRPC, on SQLite and on PostgreSQL: registration, login, tokens
that other services accept, ownership, roles, the first admin, and secrets that never
come back out."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from cinema.v1 import cast_pb2, cast_pb2_grpc, user_pb2, user_pb2_grpc
from services.common.auth import TokenVerifier
from services.common.context import Role
from services.common.db import make_engine
from services.common.settings import SettingsError
from services.user.__main__ import build
from tests.conftest import DatabaseFactory
from tests.support.errors import CallError, call_error
from tests.support.mail import LINK, Mailbox, register, wait_until_sent
from tests.support.servers import RunningService, service_settings, start_service
from tests.support.tokens import SigningKeys

Metadata = tuple[tuple[str, str], ...]

ADMIN_EMAIL = "Boss@Cinema.test"
ADMIN_PASSWORD = "boss-password-1"
PASSWORD = "s3cret-Passw0rd"
HASH_MARK = b"$argon2"


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Accounts:
    """A running user service (with a bootstrap admin) and a cast service beside it."""

    user: RunningService
    cast: RunningService
    users: user_pb2_grpc.UserServiceStub
    casts: cast_pb2_grpc.CastServiceStub
    admin: Metadata
    admin_id: str
    mailbox: Mailbox
    #: The user service's database (what :func:`wait_until_sent` looks at).
    url: str

    def register(
        self, password: str = PASSWORD, email: str | None = None, display_name: str = "Film Fan"
    ) -> user_pb2.User:
        """A new account, registered as anyone does: CreateUser, then the mailed link."""
        email = email or f"fan-{uuid.uuid4().hex[:12]}@example.test"
        return register(self.users, self.mailbox, email, password, display_name)

    def login(self, email: str, password: str = PASSWORD) -> user_pb2.LoginResponse:
        return self.users.Login(user_pb2.LoginRequest(email=email, password=password))

    def session(self, password: str = PASSWORD) -> tuple[user_pb2.User, Metadata]:
        """A new account and the metadata of its own login."""
        user = self.register(password)
        return user, bearer(self.login(user.email, password).access_token)


def start_user_service(
    keys: SigningKeys, url: str, admin: tuple[str, str] | None = (ADMIN_EMAIL, ADMIN_PASSWORD)
) -> RunningService:
    env = keys.env()
    if admin is not None:
        env |= {"CINEMA_ADMIN_EMAIL": admin[0], "CINEMA_ADMIN_PASSWORD": admin[1]}
    return start_service("user", service_settings("user", url, env))


@pytest.fixture(scope="module")
def accounts(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Accounts]:
    url = databases("user")
    user = start_user_service(keys, url)
    cast = start_service("cast", service_settings("cast", databases("cast"), keys.env()))
    try:
        users = user_pb2_grpc.UserServiceStub(user.channel())
        login = users.Login(user_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
        admin = bearer(login.access_token)
        verifier = TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")
        yield Accounts(
            user=user,
            cast=cast,
            users=users,
            casts=cast_pb2_grpc.CastServiceStub(cast.channel()),
            admin=admin,
            admin_id=verifier.verify(login.access_token).subject,
            mailbox=Mailbox(keys.mail_dir),
            url=url,
        )
    finally:
        cast.stop()
        user.stop()


def expect_error(call: Callable[[], object], code: grpc.StatusCode) -> CallError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = call_error(caught.value)
    assert error.code == code, error
    return error


def verifier_for(keys: SigningKeys) -> TokenVerifier:
    return TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")


# --- registration ------------------------------------------------------------------------


def test_register_returns_the_account_and_no_secret(accounts: Accounts) -> None:
    email = f"  Ann.Lee+{uuid.uuid4().hex[:6]}@Example.TEST "
    user = accounts.register(email=email, display_name="  Ann Lee ")
    assert user.id and user.email == email.strip(), "trimmed, case kept"
    assert user.display_name == "Ann Lee"
    assert user.role == user_pb2.ROLE_USER
    assert user.create_time.seconds > 0 and user.update_time == user.create_time
    assert user.password == "" and user.current_password == ""
    fetched = accounts.users.GetUser(user_pb2.GetUserRequest(id=user.id), metadata=accounts.admin)
    assert fetched == user


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"email": ""}, "user.email"),
        ({"email": "no-at-sign"}, "user.email"),
        ({"email": "two@@example.test"}, "user.email"),
        ({"email": "sp ace@example.test"}, "user.email"),
        ({"email": "a@" + "d" * 253}, "user.email"),
        ({"display_name": " "}, "user.display_name"),
        ({"display_name": "n" * 101}, "user.display_name"),
        ({"password": ""}, "user.password"),
        ({"password": "7-chars"}, "user.password"),
        ({"password": "p" * 257}, "user.password"),
        ({"role": user_pb2.ROLE_ADMIN}, "user.role"),
        ({"role": 7}, "user.role"),
    ],
)
def test_register_bad_input_names_the_field(
    accounts: Accounts, fields: dict[str, Any], path: str
) -> None:
    email = f"bad-{uuid.uuid4().hex[:8]}@example.test"
    user = user_pb2.User(email=email, display_name="Bad", password=PASSWORD)
    for name, value in fields.items():
        setattr(user, name, value)
    error = expect_error(
        lambda: accounts.users.CreateUser(user_pb2.CreateUserRequest(user=user)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(error.violations) == {path}
    if "password" in fields:
        assert fields["password"] not in error.message or not fields["password"]
    # Nothing was stored: the email is still free.
    accounts.register(email=email)


def test_register_accepts_an_explicit_user_role(accounts: Accounts) -> None:
    email = f"r-{uuid.uuid4().hex[:8]}@example.test"
    user = accounts.users.CreateUser(
        user_pb2.CreateUserRequest(
            user=user_pb2.User(
                email=email, display_name="R", password=PASSWORD, role=user_pb2.ROLE_USER
            )
        )
    )
    assert user.role == user_pb2.ROLE_USER
    made = accounts.users.VerifyEmail(
        user_pb2.VerifyEmailRequest(token=accounts.mailbox.token(email), password=PASSWORD)
    )
    assert made.role == user_pb2.ROLE_USER


def test_an_admin_makes_an_account_at_once_and_a_taken_email_is_already_exists(
    accounts: Accounts,
) -> None:
    local = f"Dup-{uuid.uuid4().hex[:8]}"
    first = accounts.users.CreateUser(
        user_pb2.CreateUserRequest(
            user=user_pb2.User(
                email=f"{local}@Example.test", display_name="By Admin", password=PASSWORD
            )
        ),
        metadata=accounts.admin,
    )
    assert first.id and first.create_time.seconds > 0
    wait_until_sent(accounts.url)
    assert accounts.mailbox.messages(first.email) == [], "an admin's account needs no link"
    for variant in (
        f"{local}@Example.test",
        f"{local.lower()}@example.TEST",
        f" {local.upper()}@EXAMPLE.TEST ",
    ):
        again = user_pb2.CreateUserRequest(
            user=user_pb2.User(email=variant, display_name="Again", password=PASSWORD)
        )
        error = expect_error(
            functools.partial(accounts.users.CreateUser, again, metadata=accounts.admin),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        assert error.reason == "EMAIL_TAKEN"
    # The first account is untouched and logs in.
    assert accounts.login(first.email.lower()).access_token


def test_concurrent_links_of_one_email_give_one_account(accounts: Accounts) -> None:
    local = f"race-{uuid.uuid4().hex[:8]}"
    variants = [f"{local}@race.test", f"{local.upper()}@race.test", f"{local}@RACE.test"] * 3

    def retried(call: Callable[[], object]) -> grpc.StatusCode:
        while True:
            try:
                call()
                return grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = call_error(error).code
            # Password hashing beyond the service's admission limit is refused, and a
            # client retries it (services/user/passwords.py); the race is what counts.
            if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                return code
            time.sleep(0.01)

    def create(email: str) -> grpc.StatusCode:
        request = user_pb2.CreateUserRequest(
            user=user_pb2.User(email=email, display_name="Racer", password=PASSWORD)
        )
        return retried(lambda: accounts.users.CreateUser(request))

    with concurrent.futures.ThreadPoolExecutor(len(variants)) as pool:
        assert set(pool.map(create, variants)) == {grpc.StatusCode.OK}
    mails = accounts.mailbox.wait(variants[0], len(variants))
    tokens = [LINK.search(m.get_content()) for m in mails]
    assert len(tokens) == len(variants) and all(tokens), "one link each: none had an account"

    def follow(token: str) -> grpc.StatusCode:
        request = user_pb2.VerifyEmailRequest(token=token, password=PASSWORD)
        return retried(lambda: accounts.users.VerifyEmail(request))

    with concurrent.futures.ThreadPoolExecutor(len(variants)) as pool:
        outcomes = list(pool.map(follow, [t.group(2) for t in tokens if t]))
    assert outcomes.count(grpc.StatusCode.OK) == 1, outcomes
    assert set(outcomes) == {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, outcomes


# --- login -------------------------------------------------------------------------------


def test_login_gives_a_bearer_token_for_the_account(accounts: Accounts, keys: SigningKeys) -> None:
    user = accounts.register()
    before = dt.datetime.now(dt.UTC)
    reply = accounts.login(f"  {user.email.upper()} ")
    assert reply.token_type == "Bearer"
    assert reply.expires_in == 300  # CINEMA_ACCESS_TOKEN_TTL_SECONDS' default
    expire_time = reply.expire_time.ToDatetime(dt.UTC)
    assert before + dt.timedelta(seconds=298) <= expire_time <= before + dt.timedelta(seconds=301)
    principal = verifier_for(keys).verify(reply.access_token)
    assert principal.subject == user.id and principal.role is Role.USER
    mine = accounts.users.GetUser(
        user_pb2.GetUserRequest(id=user.id), metadata=bearer(reply.access_token)
    )
    assert mine == user


def test_unknown_email_and_wrong_password_fail_alike(accounts: Accounts) -> None:
    user = accounts.register()
    wrong_password = expect_error(
        lambda: accounts.login(user.email, PASSWORD + "x"), grpc.StatusCode.UNAUTHENTICATED
    )
    unknown_email = expect_error(
        lambda: accounts.login("nobody-" + user.email, PASSWORD), grpc.StatusCode.UNAUTHENTICATED
    )
    assert wrong_password == unknown_email
    assert wrong_password.reason == "INVALID_CREDENTIALS"
    assert user.email not in wrong_password.message


@pytest.mark.parametrize(
    ("request_", "path"),
    [
        (user_pb2.LoginRequest(password=PASSWORD), "email"),
        (user_pb2.LoginRequest(email="a@b.test"), "password"),
        (user_pb2.LoginRequest(email="a@b.test", password="p" * 257), "password"),
    ],
)
def test_login_without_credentials_is_invalid_argument(
    accounts: Accounts, request_: user_pb2.LoginRequest, path: str
) -> None:
    error = expect_error(lambda: accounts.users.Login(request_), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(error.violations) == {path}


def test_the_login_token_works_against_another_service(accounts: Accounts) -> None:
    cast = accounts.casts.CreateCast(
        cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Made by the first admin")),
        metadata=accounts.admin,
    )
    assert cast.id
    _, user = accounts.session()
    expect_error(
        lambda: accounts.casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="x")), metadata=user
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


# --- nothing secret comes back out -------------------------------------------------------


def test_no_password_or_hash_in_any_response_error_or_log(
    accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    old, new = "Old-Secret-Pw-1", "New-Secret-Pw-2"
    secrets = [old.encode(), new.encode(), HASH_MARK]
    seen: list[tuple[str, bytes]] = []

    def trailers(name: str, rpc: grpc.Call) -> None:
        metadata: Any = rpc.trailing_metadata() or ()
        for key, value in metadata:
            data = value if isinstance(value, bytes) else str(value).encode()
            seen.append((f"{name} trailer {key}", data))

    def answer(name: str, call: Callable[[], tuple[Any, grpc.Call]]) -> Any:
        response, rpc = call()
        seen.append((name, response.SerializeToString()))
        trailers(name, rpc)
        return response

    def failure(name: str, call: Callable[[], object]) -> None:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        rpc = cast(grpc.Call, caught.value)
        seen.append((name, (rpc.details() or "").encode()))
        trailers(name, rpc)

    users = accounts.users
    email = f"secret-{uuid.uuid4().hex[:8]}@example.test"
    answer(
        "CreateUser",
        lambda: users.CreateUser.with_call(
            user_pb2.CreateUserRequest(
                user=user_pb2.User(
                    email=email, display_name="S", password=old, current_password=old
                )
            )
        ),
    )
    created = answer(
        "VerifyEmail",
        lambda: users.VerifyEmail.with_call(
            user_pb2.VerifyEmailRequest(token=accounts.mailbox.token(email), password=old)
        ),
    )
    login = answer(
        "Login", lambda: users.Login.with_call(user_pb2.LoginRequest(email=email, password=old))
    )
    mine = bearer(login.access_token)
    answer(
        "GetUser",
        lambda: users.GetUser.with_call(user_pb2.GetUserRequest(id=created.id), metadata=mine),
    )
    answer(
        "ListUsers",
        lambda: users.ListUsers.with_call(
            user_pb2.ListUsersRequest(page_size=1000), metadata=accounts.admin
        ),
    )
    answer(
        "UpdateUser(password)",
        lambda: users.UpdateUser.with_call(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=created.id, password=new, current_password=old),
                update_mask=field_mask_pb2.FieldMask(paths=["password"]),
            ),
            metadata=mine,
        ),
    )
    answer(
        "UpdateUser(everything set)",
        lambda: users.UpdateUser.with_call(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(
                    id=created.id, display_name="T", password=new, current_password=new
                )
            ),
            metadata=mine,
        ),
    )
    failure("Login(old)", lambda: users.Login(user_pb2.LoginRequest(email=email, password=old)))
    failure(
        "Login(unknown)",
        lambda: users.Login(user_pb2.LoginRequest(email="x" + email, password=new)),
    )
    failure(
        "UpdateUser(wrong current)",
        lambda: users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=created.id, password=old, current_password=old),
                update_mask=field_mask_pb2.FieldMask(paths=["password"]),
            ),
            metadata=mine,
        ),
    )
    answer(
        "CreateUser(taken)",
        lambda: users.CreateUser.with_call(
            user_pb2.CreateUserRequest(
                user=user_pb2.User(email=email, display_name="S", password=new)
            )
        ),
    )
    failure(
        "CreateUser(taken, by an admin)",
        lambda: users.CreateUser(
            user_pb2.CreateUserRequest(
                user=user_pb2.User(email=email, display_name="S", password=new)
            ),
            metadata=accounts.admin,
        ),
    )
    failure(
        "CreateUser(too short)",
        lambda: users.CreateUser(
            user_pb2.CreateUserRequest(
                user=user_pb2.User(email="y" + email, display_name="S", password="Sh0rt!")
            )
        ),
    )
    answer(
        "DeleteUser",
        lambda: users.DeleteUser.with_call(
            user_pb2.DeleteUserRequest(id=created.id), metadata=mine
        ),
    )
    wait_until_sent(accounts.url)
    for mail in accounts.mailbox.messages(email):
        seen.append((f"mail {mail['Subject']}", mail.as_bytes()))
    assert {name for name, _ in seen} >= {
        "CreateUser",
        "VerifyEmail",
        "CreateUser(taken)",
        "mail Confirm your Cinema account",
        "mail Someone tried to register with your Cinema address",
        "Login",
        "GetUser",
        "ListUsers",
        "UpdateUser(password)",
        "DeleteUser",
    }
    for name, data in seen:
        for secret in [*secrets, b"Sh0rt!"]:
            assert secret not in data, f"{secret!r} leaked in {name}"
    logged = caplog.text
    for word in (old, new, "Sh0rt!", HASH_MARK.decode()):
        assert word not in logged, f"{word!r} leaked into the logs"


# --- changing an account -----------------------------------------------------------------


def test_update_own_display_name(accounts: Accounts) -> None:
    user, mine = accounts.session()
    updated = accounts.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, display_name="  New Name ")),
        metadata=mine,
    )
    assert updated.display_name == "New Name"
    assert updated.email == user.email and updated.role == user.role
    assert updated.update_time.ToNanoseconds() >= user.update_time.ToNanoseconds()
    fetched = accounts.users.GetUser(user_pb2.GetUserRequest(id=user.id), metadata=mine)
    assert fetched == updated
    error = expect_error(
        lambda: accounts.users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=user.id, display_name=""),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=mine,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(error.violations) == {"user.display_name"}
    error = expect_error(
        lambda: accounts.users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=user.id, display_name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["create_time", "current_password"]),
            ),
            metadata=mine,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(error.violations) == {"update_mask"}


def test_change_email_keeps_it_unique(accounts: Accounts) -> None:
    user, mine = accounts.session()
    other = accounts.register()
    error = expect_error(
        lambda: accounts.users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=user.id, email=other.email.upper(), current_password=PASSWORD)
            ),
            metadata=mine,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert error.reason == "EMAIL_TAKEN"
    # A change of case alone is the same account: no current password needed.
    recased = accounts.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=user.id, email=user.email.upper())),
        metadata=mine,
    )
    assert recased.email == user.email.upper()
    assert accounts.login(user.email).access_token


def test_changing_ones_own_email_needs_the_current_password(accounts: Accounts) -> None:
    # A stolen token alone must not move the account to the thief's address.
    user, mine = accounts.session()
    new_email = f"moved-{user.email}"

    def change(current_password: str | None = None) -> user_pb2.User:
        account = user_pb2.User(id=user.id, email=new_email)
        if current_password is not None:
            account.current_password = current_password
        return accounts.users.UpdateUser(user_pb2.UpdateUserRequest(user=account), metadata=mine)

    missing = expect_error(change, grpc.StatusCode.INVALID_ARGUMENT)
    assert set(missing.violations) == {"user.current_password"}
    wrong = expect_error(
        lambda: change(current_password="not-the-password"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert wrong.reason == "CURRENT_PASSWORD_MISMATCH"
    assert accounts.login(user.email).access_token, "nothing changed so far"
    assert change(current_password=PASSWORD).email == new_email
    assert accounts.login(new_email).access_token


def test_change_password_needs_the_current_one(accounts: Accounts) -> None:
    user, mine = accounts.session()

    def change(current: str, new: str = "brand-new-password") -> user_pb2.User:
        return accounts.users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=user.id, password=new, current_password=current),
                update_mask=field_mask_pb2.FieldMask(paths=["password"]),
            ),
            metadata=mine,
        )

    missing = expect_error(lambda: change(""), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(missing.violations) == {"user.current_password"}
    wrong = expect_error(lambda: change("not-my-password"), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(wrong.violations) == {"user.current_password"}
    assert wrong.reason == "CURRENT_PASSWORD_MISMATCH"
    too_short = expect_error(lambda: change(PASSWORD, "short"), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(too_short.violations) == {"user.password"}
    accounts.login(user.email, PASSWORD)  # nothing changed so far

    change(PASSWORD)
    expect_error(lambda: accounts.login(user.email, PASSWORD), grpc.StatusCode.UNAUTHENTICATED)
    assert accounts.login(user.email, "brand-new-password").access_token


def test_an_admin_resets_a_password_without_the_current_one(accounts: Accounts) -> None:
    user = accounts.register()
    accounts.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=user.id, password="reset-by-admin"),
            update_mask=field_mask_pb2.FieldMask(paths=["password"]),
        ),
        metadata=accounts.admin,
    )
    expect_error(lambda: accounts.login(user.email), grpc.StatusCode.UNAUTHENTICATED)
    assert accounts.login(user.email, "reset-by-admin").access_token


def session_revoked(accounts: Accounts, metadata: Metadata) -> bool:
    """Whether the user service refuses ``metadata``'s token as a revoked session."""
    try:
        accounts.users.GetUser(user_pb2.GetUserRequest(id="x"), metadata=metadata)
    except grpc.RpcError as error:
        return call_error(error).reason == "SESSION_REVOKED"
    return False


def wait_until_revoked(accounts: Accounts, metadata: Metadata, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not session_revoked(accounts, metadata):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_only_an_admin_changes_a_role(accounts: Accounts, keys: SigningKeys) -> None:
    user, mine = accounts.session()

    def set_role(role: user_pb2.Role.ValueType, metadata: Metadata) -> user_pb2.User:
        return accounts.users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=user.id, role=role),
                update_mask=field_mask_pb2.FieldMask(paths=["role"]),
            ),
            metadata=metadata,
        )

    error = expect_error(
        lambda: set_role(user_pb2.ROLE_ADMIN, mine), grpc.StatusCode.PERMISSION_DENIED
    )
    assert error.reason == "ROLE_CHANGE_DENIED"
    # Echoing one's own resource back (role unchanged) is allowed.
    echoed = accounts.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(
                id=user.id, email=user.email, display_name="Echo", role=user_pb2.ROLE_USER
            )
        ),
        metadata=mine,
    )
    assert echoed.display_name == "Echo" and echoed.role == user_pb2.ROLE_USER

    assert set_role(user_pb2.ROLE_ADMIN, accounts.admin).role == user_pb2.ROLE_ADMIN
    # The old token says user, and the role change ended its session (refused everywhere a
    # moment later); a new login says admin and opens admin RPCs.
    assert wait_until_revoked(accounts, mine)
    promoted = accounts.login(user.email).access_token
    assert verifier_for(keys).verify(promoted).role is Role.ADMIN
    accounts.users.ListUsers(user_pb2.ListUsersRequest(page_size=1), metadata=bearer(promoted))
    assert set_role(user_pb2.ROLE_USER, accounts.admin).role == user_pb2.ROLE_USER


def test_users_cannot_touch_each_other_but_an_admin_can(accounts: Accounts) -> None:
    ann, ann_token = accounts.session()
    bob, bob_token = accounts.session()
    for target in (bob.id, "no-such-user"):
        expect_error(
            functools.partial(
                accounts.users.GetUser, user_pb2.GetUserRequest(id=target), metadata=ann_token
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        expect_error(
            functools.partial(
                accounts.users.UpdateUser,
                user_pb2.UpdateUserRequest(user=user_pb2.User(id=target, display_name="Mine now")),
                metadata=ann_token,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        expect_error(
            functools.partial(
                accounts.users.DeleteUser, user_pb2.DeleteUserRequest(id=target), metadata=ann_token
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    assert accounts.users.GetUser(user_pb2.GetUserRequest(id=bob.id), metadata=bob_token) == bob

    admin = accounts.admin
    assert accounts.users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=admin) == ann
    renamed = accounts.users.UpdateUser(
        user_pb2.UpdateUserRequest(user=user_pb2.User(id=ann.id, display_name="Renamed")),
        metadata=admin,
    )
    assert renamed.display_name == "Renamed"
    accounts.users.DeleteUser(user_pb2.DeleteUserRequest(id=ann.id), metadata=admin)
    expect_error(
        lambda: accounts.users.GetUser(user_pb2.GetUserRequest(id=ann.id), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
    expect_error(
        lambda: accounts.users.GetUser(user_pb2.GetUserRequest(id="no-such-user"), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )


def test_list_users_is_admin_only_and_paginated(accounts: Accounts) -> None:
    made = {accounts.register().id for _ in range(5)}
    _, user = accounts.session()
    expect_error(
        lambda: accounts.users.ListUsers(user_pb2.ListUsersRequest(), metadata=user),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    expect_error(
        lambda: accounts.users.ListUsers(user_pb2.ListUsersRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    seen: list[str] = []
    token = ""
    while True:
        page = accounts.users.ListUsers(
            user_pb2.ListUsersRequest(page_size=2, page_token=token), metadata=accounts.admin
        )
        assert len(page.users) <= 2
        seen.extend(u.id for u in page.users)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "an account appeared on two pages"
    assert made | {accounts.admin_id} <= set(seen)
    assert seen == sorted(seen), "oldest first"
    for bad in (user_pb2.ListUsersRequest(page_size=-1), user_pb2.ListUsersRequest(page_token="!")):
        error = expect_error(
            functools.partial(accounts.users.ListUsers, bad, metadata=accounts.admin),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert set(error.violations) <= {"page_size", "page_token"} and error.violations


def test_a_deleted_user_cannot_log_in(accounts: Accounts) -> None:
    user, mine = accounts.session()
    accounts.users.DeleteUser(user_pb2.DeleteUserRequest(id=user.id), metadata=mine)
    after = expect_error(lambda: accounts.login(user.email), grpc.StatusCode.UNAUTHENTICATED)
    assert after.reason == "INVALID_CREDENTIALS"
    # Its still-unexpired token is refused: the deletion ended its sessions (SessionRevoked
    # reaches the service a moment later; until then the account is simply not found).
    deadline = time.monotonic() + 2
    while True:
        with pytest.raises(grpc.RpcError) as refused:
            accounts.users.GetUser(user_pb2.GetUserRequest(id=user.id), metadata=mine)
        found = call_error(refused.value)
        if found.reason == "SESSION_REVOKED":
            break
        assert found.code is grpc.StatusCode.NOT_FOUND, found
        assert time.monotonic() < deadline, "the deleted account's token still works"
        time.sleep(0.02)
    # The email is free again.
    again = accounts.register(email=user.email)
    assert again.id != user.id


# --- the first admin ---------------------------------------------------------------------


def count_admins(url: str) -> list[str]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT email FROM users WHERE role = 'admin'"))
            return [row.email for row in rows]
    finally:
        engine.dispose()


def test_first_admin_is_made_once_and_a_restart_makes_no_second(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    url = databases("user_first_admin")
    service = start_user_service(keys, url)
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        admin = bearer(
            users.Login(
                user_pb2.LoginRequest(email=ADMIN_EMAIL.lower(), password=ADMIN_PASSWORD)
            ).access_token
        )
        listed = users.ListUsers(user_pb2.ListUsersRequest(), metadata=admin).users
        assert [(u.email, u.role) for u in listed] == [(ADMIN_EMAIL, user_pb2.ROLE_ADMIN)]
    finally:
        service.stop()

    service = start_user_service(keys, url, admin=("second@cinema.test", "second-password"))
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        expect_error(
            lambda: users.Login(
                user_pb2.LoginRequest(email="second@cinema.test", password="second-password")
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        users.Login(user_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
    finally:
        service.stop()
    assert count_admins(url) == [ADMIN_EMAIL]


def test_replicas_starting_together_make_one_admin(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    url = databases("user_admin_race")
    env = keys.env() | {"CINEMA_ADMIN_EMAIL": ADMIN_EMAIL, "CINEMA_ADMIN_PASSWORD": ADMIN_PASSWORD}
    settings = service_settings("user", url, env)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        specs = list(pool.map(lambda _: build(settings), range(4)))
    for spec in specs:
        spec.close()
    assert count_admins(url) == [ADMIN_EMAIL]


def test_the_last_admin_can_be_neither_deleted_nor_demoted(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    service = start_user_service(keys, databases("user_last_admin"))
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        login = users.Login(user_pb2.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD))
        admin = bearer(login.access_token)
        admin_id = verifier_for(keys).verify(login.access_token).subject
        demote = user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=admin_id, role=user_pb2.ROLE_USER),
            update_mask=field_mask_pb2.FieldMask(paths=["role"]),
        )
        for call in (
            lambda: users.DeleteUser(user_pb2.DeleteUserRequest(id=admin_id), metadata=admin),
            lambda: users.UpdateUser(demote, metadata=admin),
        ):
            assert expect_error(call, grpc.StatusCode.FAILED_PRECONDITION).reason == "LAST_ADMIN"
        deputy = register(users, Mailbox(keys.mail_dir), "deputy@cinema.test", PASSWORD, "D")
        users.UpdateUser(
            user_pb2.UpdateUserRequest(
                user=user_pb2.User(id=deputy.id, role=user_pb2.ROLE_ADMIN),
                update_mask=field_mask_pb2.FieldMask(paths=["role"]),
            ),
            metadata=admin,
        )
        # With a second admin in place, the first may step down and leave.
        users.DeleteUser(user_pb2.DeleteUserRequest(id=admin_id), metadata=admin)
    finally:
        service.stop()


def test_first_admin_email_of_an_existing_user_stops_the_start(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    url = databases("user_admin_taken")
    service = start_user_service(keys, url, admin=None)
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        register(users, Mailbox(keys.mail_dir), "early@cinema.test", PASSWORD, "E")
    finally:
        service.stop()
    env = keys.env() | {
        "CINEMA_ADMIN_EMAIL": "EARLY@cinema.test",
        "CINEMA_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    with pytest.raises(SettingsError, match="CINEMA_ADMIN_EMAIL"):
        build(service_settings("user", url, env))
    assert count_admins(url) == []
    bad = keys.env() | {"CINEMA_ADMIN_EMAIL": "not-an-email", "CINEMA_ADMIN_PASSWORD": "short"}
    with pytest.raises(SettingsError, match="CINEMA_ADMIN_PASSWORD") as caught:
        build(service_settings("user", url, bad))
    assert "short" not in str(caught.value).replace("too short", "")


def remove_admin(
    users: user_pb2_grpc.UserServiceStub,
    start: threading.Barrier,
    how: str,
    target_id: str,
    metadata: Metadata,
) -> grpc.StatusCode:
    """Delete or demote the admin ``target_id`` once ``start`` opens; the status code."""
    start.wait()
    try:
        if how == "delete":
            users.DeleteUser(user_pb2.DeleteUserRequest(id=target_id), metadata=metadata)
        else:
            users.UpdateUser(
                user_pb2.UpdateUserRequest(
                    user=user_pb2.User(id=target_id, role=user_pb2.ROLE_USER),
                    update_mask=field_mask_pb2.FieldMask(paths=["role"]),
                ),
                metadata=metadata,
            )
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return call_error(error).code


def test_two_admins_removing_each_other_at_once_leave_one(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    url = databases("user_admin_duel")
    service = start_user_service(keys, url)
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        verifier = verifier_for(keys)

        def sign_in(email: str, password: str) -> tuple[str, Metadata]:
            token = users.Login(user_pb2.LoginRequest(email=email, password=password))
            return verifier.verify(token.access_token).subject, bearer(token.access_token)

        survivor = sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        for round_, how in enumerate(["delete", "demote"] * 3):
            email = f"duel-{round_}@cinema.test"
            challenger = register(users, Mailbox(keys.mail_dir), email, PASSWORD, "Duel")
            users.UpdateUser(
                user_pb2.UpdateUserRequest(
                    user=user_pb2.User(id=challenger.id, role=user_pb2.ROLE_ADMIN),
                    update_mask=field_mask_pb2.FieldMask(paths=["role"]),
                ),
                metadata=survivor[1],
            )
            pair = [survivor, sign_in(email, PASSWORD)]
            start = threading.Barrier(2)
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                # Each admin aims at the other at the same moment.
                futures = [
                    pool.submit(remove_admin, users, start, how, pair[1 - me][0], pair[me][1])
                    for me in (0, 1)
                ]
                outcomes = [future.result() for future in futures]
            assert outcomes.count(grpc.StatusCode.OK) == 1, (how, outcomes)
            assert set(outcomes) - {grpc.StatusCode.OK} <= {
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED,
                # The winner's change ended the loser's sessions (a deleted or demoted
                # account's tokens are revoked), and that can reach the loser's call first.
                grpc.StatusCode.UNAUTHENTICATED,
            }, (how, outcomes)
            admins = count_admins(url)
            assert len(admins) == 1, (how, admins)
            survivor = pair[outcomes.index(grpc.StatusCode.OK)]
    finally:
        service.stop()


def test_login_upgrades_a_hash_when_the_parameters_change(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    url = databases("user_rehash")
    service = start_user_service(keys, url, admin=None)
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        user = register(users, Mailbox(keys.mail_dir), "old@cinema.test", PASSWORD, "O")
    finally:
        service.stop()

    def stored_hash() -> str:
        engine = make_engine(url, pool_size=1)
        try:
            with engine.connect() as connection:
                query = text("SELECT password_hash FROM users WHERE id = :id")
                return str(connection.execute(query, {"id": user.id}).scalar_one())
        finally:
            engine.dispose()

    assert "m=1024,t=1," in stored_hash()
    env = keys.env() | {"CINEMA_ARGON2_MEMORY_KIB": "2048", "CINEMA_ARGON2_TIME_COST": "2"}
    service = start_service("user", service_settings("user", url, env))
    try:
        users = user_pb2_grpc.UserServiceStub(service.channel())
        users.Login(user_pb2.LoginRequest(email="old@cinema.test", password=PASSWORD))
        upgraded = stored_hash()
        assert "m=2048,t=2," in upgraded
        users.Login(user_pb2.LoginRequest(email="old@cinema.test", password=PASSWORD))
        assert stored_hash() == upgraded, "a current hash is left alone"
    finally:
        service.stop()
