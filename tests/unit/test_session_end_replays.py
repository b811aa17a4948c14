"""The authorization interceptor's one exception for a token whose session has ended: a
repeat of a recorded call it made (services/common/handled_calls.py) gets through, to be
answered from the record; anything else is SESSION_REVOKED, and only a recorded RPC ever
costs a lookup."""

from __future__ import annotations

import pytest

from cinema.v1 import user_pb2  # noqa: F401  (registers the RPCs' access rules)
from services.common import handled_calls
from services.common.auth import TokenVerifier
from services.common.context import CALL_ID_METADATA, Deadline, Role
from services.common.errors import Unauthenticated
from services.common.interceptors import AuthorizationInterceptor
from services.common.revocations import Revocations
from tests.support.tokens import SigningKeys

LOGOUT = "/cinema.v1.UserService/Logout"
GET_USER = "/cinema.v1.UserService/GetUser"


@pytest.fixture
def ended(keys: SigningKeys) -> tuple[str, Revocations]:
    """A token of session ``s-1``, which has ended."""
    token = keys.issuer.issue("user-1", Role.USER, session_id="s-1").token
    revocations = Revocations()
    revocations.add("s-1", until=4_102_444_800)  # 2100
    return token, revocations


def interceptor(
    keys: SigningKeys, revocations: Revocations, recorded: set[tuple[str, str]]
) -> tuple[AuthorizationInterceptor, list[tuple[str, str]]]:
    asked: list[tuple[str, str]] = []

    def handled(method: str, call_id: str) -> bool:
        asked.append((method, call_id))
        return (method, call_id) in recorded

    verifier = TokenVerifier(keys.public_path.read_bytes(), issuer="cinema", audience="cinema")
    return AuthorizationInterceptor(verifier, revocations, handled), asked


def metadata(token: str, call_id: str | None) -> tuple[tuple[str, str], ...]:
    calls = ((CALL_ID_METADATA, call_id),) if call_id else ()
    return (("authorization", f"Bearer {token}"), *calls)


def test_a_repeat_of_a_recorded_call_gets_through(
    keys: SigningKeys, ended: tuple[str, Revocations]
) -> None:
    token, revocations = ended
    check, asked = interceptor(keys, revocations, {("Logout", "call-1")})
    context = check.authorize(LOGOUT, metadata(token, "call-1"), Deadline(None))
    assert context.principal is not None and context.principal.session_id == "s-1"
    assert context.call_id == "call-1"
    assert asked == [("Logout", "call-1")]


@pytest.mark.parametrize(
    ("method", "call_id", "lookups"),
    [
        (LOGOUT, "call-2", 1),  # a call id that was never recorded
        (LOGOUT, None, 0),  # no call id: not a repeat
        (GET_USER, "call-1", 0),  # a read is never recorded: no lookup at all
    ],
)
def test_anything_else_under_an_ended_session_is_refused(
    keys: SigningKeys,
    ended: tuple[str, Revocations],
    method: str,
    call_id: str | None,
    lookups: int,
) -> None:
    token, revocations = ended
    check, asked = interceptor(keys, revocations, {("Logout", "call-1"), ("GetUser", "call-1")})
    with pytest.raises(Unauthenticated) as refused:
        check.authorize(method, metadata(token, call_id), Deadline(None))
    assert refused.value.reason == "SESSION_REVOKED"
    assert len(asked) == lookups


def test_a_live_session_costs_no_lookup(keys: SigningKeys) -> None:
    token = keys.issuer.issue("user-1", Role.USER, session_id="s-live").token
    check, asked = interceptor(keys, Revocations(), set())
    check.authorize(LOGOUT, metadata(token, "call-1"), Deadline(None))
    assert asked == []


def test_every_recorded_rpc_is_in_the_contracts() -> None:
    from gateway import envoy_config

    paths = {
        envoy_config.grpc_path(m)
        for key in envoy_config.SERVICES
        for m in envoy_config.service_methods(key)
    }
    assert handled_calls.RECORDED - paths == set()
