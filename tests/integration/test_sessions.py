"""Sessions on real servers and both databases: logout and revocation reach every service
within 2 s (through SessionRevoked on the tests' NATS), refresh tokens rotate and a reused one
ends its session, a password change ends the other sessions, a service that starts knows
the sessions that ended before it, and failed logins are throttled per email alike for
known and unknown emails."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cinema.v1 import (
    cast_pb2,
    cast_pb2_grpc,
    movie_pb2,
    movie_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from services.common.context import CALL_ID_METADATA
from tests.conftest import DatabaseFactory
from tests.support.errors import call_error
from tests.support.mail import Mailbox, register
from tests.support.servers import RunningService, service_settings, start_service, start_shop
from tests.support.tokens import SigningKeys

ADMIN_EMAIL = "sessions-admin@cinema.test"
PASSWORD = "sessions-password"


@dataclass
class Services:
    env: dict[str, str]
    databases: DatabaseFactory
    started: list[RunningService]
    users: user_pb2_grpc.UserServiceStub
    casts: cast_pb2_grpc.CastServiceStub
    movies: movie_pb2_grpc.MovieServiceStub
    orders: order_pb2_grpc.OrderServiceStub
    mailbox: Mailbox

    def register(self) -> tuple[str, str]:
        email = f"s-{uuid.uuid4().hex[:12]}@cinema.test"
        user = register(self.users, self.mailbox, email, PASSWORD, "Sessions")
        return user.id, email

    def login(self, email: str, password: str = PASSWORD) -> user_pb2.LoginResponse:
        return self.users.Login(user_pb2.LoginRequest(email=email, password=password))

    def calls(self, token: str, user_id: str) -> dict[str, Callable[[], Any]]:
        """One authenticated call on each service, as the holder of ``token``."""
        metadata = (("authorization", f"Bearer {token}"),)
        return {
            "user": lambda: self.users.GetUser(
                user_pb2.GetUserRequest(id=user_id), metadata=metadata
            ),
            "order": lambda: self.orders.ListOrders(
                order_pb2.ListOrdersRequest(page_size=1), metadata=metadata
            ),
            # Public reads: a token that is present must still be valid.
            "movie": lambda: self.movies.ListMovies(
                movie_pb2.ListMoviesRequest(page_size=1), metadata=metadata
            ),
            "cast": lambda: self.casts.ListCasts(
                cast_pb2.ListCastsRequest(page_size=1), metadata=metadata
            ),
        }


@pytest.fixture(scope="module")
def services(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[Services]:
    env = keys.env()
    with start_shop(env, databases, admin_email=ADMIN_EMAIL, admin_password=PASSWORD) as shop:
        yield Services(
            env=env,
            databases=databases,
            started=shop.started,
            users=user_pb2_grpc.UserServiceStub(shop.user.channel()),
            casts=cast_pb2_grpc.CastServiceStub(shop.cast.channel()),
            movies=movie_pb2_grpc.MovieServiceStub(shop.movie.channel()),
            orders=order_pb2_grpc.OrderServiceStub(shop.order.channel()),
            mailbox=Mailbox(keys.mail_dir),
        )


def refused(call: Callable[[], Any]) -> str | None:
    """The ErrorInfo reason when ``call`` is refused as unauthenticated, else None."""
    try:
        call()
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.UNAUTHENTICATED:
            return call_error(error).reason
        raise
    return None


def refused_everywhere_within(
    calls: dict[str, Callable[[], Any]], seconds: float
) -> dict[str, float]:
    """Seconds until each service refused the token with SESSION_REVOKED."""
    started = time.monotonic()
    took: dict[str, float] = {}
    while len(took) < len(calls):
        for name, call in calls.items():
            if name not in took and refused(call) == "SESSION_REVOKED":
                took[name] = time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise AssertionError(f"still accepted after {seconds}s: {set(calls) - set(took)}")
        time.sleep(0.02)
    return took


def test_logout_ends_the_session_on_every_service_within_two_seconds(services: Services) -> None:
    user_id, email = services.register()
    login = services.login(email)
    calls = services.calls(login.access_token, user_id)
    for call in calls.values():
        call()  # accepted while the session lives
    services.users.Logout(
        user_pb2.LogoutRequest(), metadata=(("authorization", f"Bearer {login.access_token}"),)
    )
    # The refresh token at once (the user service's own table) ...
    with pytest.raises(grpc.RpcError) as spent:
        services.users.RefreshToken(user_pb2.RefreshTokenRequest(refresh_token=login.refresh_token))
    assert call_error(spent.value).reason == "REFRESH_TOKEN_INVALID"
    # ... the access token on every service within 2 s.
    took = refused_everywhere_within(calls, 2.0)
    assert max(took.values()) < 2.0, took


def test_a_refresh_token_rotates_and_a_reused_one_ends_the_session(services: Services) -> None:
    user_id, email = services.register()
    first = services.login(email)
    assert first.refresh_token and first.session_id
    second = services.users.RefreshToken(
        user_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
    )
    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    for call in services.calls(second.access_token, user_id).values():
        call()
    # The first refresh token again: someone copied it. The whole session ends.
    with pytest.raises(grpc.RpcError) as reused:
        services.users.RefreshToken(user_pb2.RefreshTokenRequest(refresh_token=first.refresh_token))
    assert call_error(reused.value).reason == "REFRESH_TOKEN_REUSED"
    with pytest.raises(grpc.RpcError) as after:
        services.users.RefreshToken(
            user_pb2.RefreshTokenRequest(refresh_token=second.refresh_token)
        )
    assert call_error(after.value).reason == "REFRESH_TOKEN_INVALID"
    refused_everywhere_within(services.calls(second.access_token, user_id), 2.0)
    refused_everywhere_within(services.calls(first.access_token, user_id), 2.0)


def _refresh(services: Services, token: str, call_id: str | None = None) -> user_pb2.LoginResponse:
    metadata = ((CALL_ID_METADATA, call_id),) if call_id else ()
    return services.users.RefreshToken(
        user_pb2.RefreshTokenRequest(refresh_token=token), metadata=metadata
    )


def test_a_repeat_of_the_call_that_spent_a_token_answers_new_tokens(services: Services) -> None:
    # Envoy repeats a RefreshToken whose replica died after its commit, with the same call
    # id: the caller never saw the first answer, so it is no reuse.
    user_id, email = services.register()
    login = services.login(email)
    call_id = f"refresh-{uuid.uuid4().hex}"
    lost = _refresh(services, login.refresh_token, call_id)
    repeat = _refresh(services, login.refresh_token, call_id)
    assert repeat.session_id == login.session_id
    assert repeat.refresh_token not in (lost.refresh_token, login.refresh_token)
    for call in services.calls(repeat.access_token, user_id).values():
        call()
    # The repeat's tokens carry the session on; the lost answer's refresh token is retired,
    # and whoever presents it is treated as a thief.
    third = _refresh(services, repeat.refresh_token)
    with pytest.raises(grpc.RpcError) as retired:
        _refresh(services, lost.refresh_token)
    assert call_error(retired.value).reason == "REFRESH_TOKEN_REUSED"
    refused_everywhere_within(services.calls(third.access_token, user_id), 2.0)


def test_a_spent_token_is_a_reuse_for_another_call_or_once_its_answer_was_used(
    services: Services,
) -> None:
    _, email = services.register()
    # Another call id: two holders of one token.
    login = services.login(email)
    _refresh(services, login.refresh_token, "call-a")
    with pytest.raises(grpc.RpcError) as other_call:
        _refresh(services, login.refresh_token, "call-b")
    assert call_error(other_call.value).reason == "REFRESH_TOKEN_REUSED"
    # The same call id, but the first answer reached its holder (it used the new token):
    # the answer was not lost, so this is a copy.
    login = services.login(email)
    answer = _refresh(services, login.refresh_token, "call-c")
    _refresh(services, answer.refresh_token)
    with pytest.raises(grpc.RpcError) as used_answer:
        _refresh(services, login.refresh_token, "call-c")
    assert call_error(used_answer.value).reason == "REFRESH_TOKEN_REUSED"


def test_a_password_change_ends_the_other_sessions_not_the_current(services: Services) -> None:
    user_id, email = services.register()
    here, elsewhere = services.login(email), services.login(email)
    here_metadata = (("authorization", f"Bearer {here.access_token}"),)
    services.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(id=user_id, password="a-new-password", current_password=PASSWORD),
            update_mask=field_mask_pb2.FieldMask(paths=["password"]),
        ),
        metadata=here_metadata,
    )
    refused_everywhere_within(services.calls(elsewhere.access_token, user_id), 2.0)
    for call in services.calls(here.access_token, user_id).values():
        call()  # the session that changed the password goes on
    listed = services.users.ListSessions(
        user_pb2.ListSessionsRequest(user_id=user_id), metadata=here_metadata
    )
    assert [(s.id, s.current) for s in listed.sessions] == [(here.session_id, True)]
    with pytest.raises(grpc.RpcError):
        services.users.RefreshToken(
            user_pb2.RefreshTokenRequest(refresh_token=elsewhere.refresh_token)
        )


def test_sessions_are_listed_and_revoked_by_their_owner_or_an_admin(services: Services) -> None:
    owner_id, owner_email = services.register()
    _, other_email = services.register()
    first, second = services.login(owner_email), services.login(owner_email)
    owner = (("authorization", f"Bearer {first.access_token}"),)
    other = (("authorization", f"Bearer {services.login(other_email).access_token}"),)
    admin = (("authorization", f"Bearer {services.login(ADMIN_EMAIL).access_token}"),)
    listed = services.users.ListSessions(
        user_pb2.ListSessionsRequest(user_id=owner_id), metadata=owner
    )
    assert [s.id for s in listed.sessions] == [second.session_id, first.session_id]
    assert [s.current for s in listed.sessions] == [False, True]
    # Someone else's session does not exist for a non-admin.
    with pytest.raises(grpc.RpcError) as hidden:
        services.users.RevokeSession(
            user_pb2.RevokeSessionRequest(id=second.session_id), metadata=other
        )
    assert hidden.value.code() is grpc.StatusCode.NOT_FOUND
    services.users.RevokeSession(
        user_pb2.RevokeSessionRequest(id=second.session_id), metadata=admin
    )
    refused_everywhere_within(services.calls(second.access_token, owner_id), 2.0)
    listed = services.users.ListSessions(
        user_pb2.ListSessionsRequest(user_id=owner_id), metadata=admin
    )
    assert [s.id for s in listed.sessions] == [first.session_id]


def test_a_service_that_starts_knows_the_sessions_that_ended_before(
    services: Services, keys: SigningKeys
) -> None:
    user_id, email = services.register()
    login = services.login(email)
    metadata = (("authorization", f"Bearer {login.access_token}"),)
    services.users.Logout(user_pb2.LogoutRequest(), metadata=metadata)
    refused_everywhere_within(services.calls(login.access_token, user_id), 2.0)
    # A new cast replica, started after the logout: SERVING only once it has read the
    # revocations, and then it refuses the token from its first call.
    late = start_service(
        "cast", service_settings("cast", services.databases("cast_late"), services.env)
    )
    try:
        casts = cast_pb2_grpc.CastServiceStub(late.channel())
        reason = refused(lambda: casts.ListCasts(cast_pb2.ListCastsRequest(), metadata=metadata))
        assert reason == "SESSION_REVOKED"
    finally:
        late.stop()


def test_failed_logins_are_throttled_per_email_whether_or_not_it_has_an_account(
    services: Services,
) -> None:
    _, email = services.register()
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@cinema.test"

    def attempt(address: str, password: str) -> tuple[grpc.StatusCode, str, float | None]:
        try:
            services.login(address, password)
        except grpc.RpcError as error:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            retry = None
            for detail in status.details if status else []:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    retry = info.retry_delay.ToTimedelta().total_seconds()
            return error.code(), call_error(error).reason, retry
        return grpc.StatusCode.OK, "", None

    answers = {
        address: [attempt(address, "wrong-password") for _ in range(7)]
        for address in (email, unknown)
    }
    for address, seen in answers.items():
        assert [a[1] for a in seen[:5]] == ["INVALID_CREDENTIALS"] * 5, address
        code, reason, retry = seen[5]
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED"), address
        assert retry is not None and 0 < retry <= 1.0
    # The same answers for a known and an unknown email.
    assert [a[:2] for a in answers[email]] == [a[:2] for a in answers[unknown]]
    # After the wait the owner logs in (and that clears the count).
    time.sleep(1.1)
    assert services.login(email).access_token
    assert attempt(email, "wrong-password")[1] == "INVALID_CREDENTIALS"
