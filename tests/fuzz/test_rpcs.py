"""No request a client can send makes a Cinema service fail inside.

Every RPC of every service gets generated requests (:mod:`tests.fuzz.messages`) from
callers with and without valid tokens, and undecodable bytes. A service may refuse any of
them, with any canonical code a client can act on; it may not answer INTERNAL or UNKNOWN
(a bug: an exception nobody mapped), nor time out or go away (a hang, a crash), nor claim
an RPC its proto declares is unimplemented, nor refuse with trailers too large for a
client to read (TRAILER_BUDGET). Afterwards every service still answers its health check.

The runs are derandomized, so CI fuzzes the same inputs every time and a failure here
fails the same way on a laptop: Hypothesis prints the smallest request it found, and the
assertion shows the traceback the service logged for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message, message_factory, text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cinema.v1 import cast_pb2, movie_pb2, order_pb2, user_pb2
from tests.fuzz.conftest import Caller, Fleet
from tests.fuzz.messages import build_message, page_tokens, requests
from tests.support.errors import call_error

SERVICES = (
    cast_pb2.DESCRIPTOR.services_by_name["CastService"],
    movie_pb2.DESCRIPTOR.services_by_name["MovieService"],
    user_pb2.DESCRIPTOR.services_by_name["UserService"],
    order_pb2.DESCRIPTOR.services_by_name["OrderService"],
)
# Deletes last: a fuzzed delete that succeeds removes seed data the other RPCs aim at.
METHODS = sorted(
    (method for service in SERVICES for method in service.methods),
    key=lambda m: (m.name.startswith("Delete"), m.full_name),
)
TIMEOUT = 5.0
# What no request may cause. Nothing in the fleet is down, so UNAVAILABLE is a crash (or
# a bug passed on as an outage), and DEADLINE_EXCEEDED within TIMEOUT is a hang.
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
}
# grpcio clients drop an answer whose metadata passes 8 KiB at random and 16 KiB always
# (grpc.max_metadata_size, grpc.absolute_max_metadata_size); Envoy has limits of its own.
# An error's message and details travel in its trailers: they must fit, whatever the input.
TRAILER_BUDGET = 8 * 1024
# Examples per RPC: about 25 RPCs on a 2-core machine, the SQLite run within ~30 s. The
# long profile (docs/fuzzing.md) multiplies them: CINEMA_FUZZ_SCALE=40.
_SCALE = max(1, int(os.environ.get("CINEMA_FUZZ_SCALE", "1")))
REQUEST_EXAMPLES = 120 * _SCALE
BYTES_EXAMPLES = 20 * _SCALE
TOKEN_EXAMPLES = 60 * _SCALE
FUZZ = settings(
    deadline=None,  # a call's cost is the server's, and TIMEOUT bounds it
    derandomize=True,
    # Every phase but "explain": it re-runs a failure many times over to say which lines
    # it ran, which against live servers costs more than it tells.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    database=None,  # nothing written to .hypothesis/: derandomized runs repeat anyway
    # Live calls are slow to Hypothesis, and lists past the batch limits are big on purpose.
    # No function_scoped_fixture to suppress: each @given below is an inner function that
    # takes no fixtures (the fleet is module-scoped and shared by every example on purpose).
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)
# Bytes no message of any schema decodes: a length running past the end, field number 0,
# wire type 7, a varint of eleven bytes, an end-group with no group, and (for messages
# whose field 1 is a string, as most are) invalid UTF-8 in it.
UNDECODABLE = (
    b"\x0a\x05ab",
    b"\x00",
    b"\x0f",
    b"\x08" + b"\xff" * 10 + b"\x01",
    b"\x0c",
    b"\n\x02\xff\xfe",
)


def message_class(type_: descriptor.Descriptor) -> type[message.Message]:
    return message_factory.GetMessageClass(type_)


def unary(fleet: Fleet, method: descriptor.MethodDescriptor, *, raw: bool) -> Callable[..., Any]:
    """A callable for ``method`` on its service: of messages, or of raw bytes."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = fleet.channel(method.containing_service.full_name)
    if raw:
        return channel.unary_unary(
            path, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
    return channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message_class(method.output_type).FromString,
    )


# Bytes grpc-message carries percent-encoded (RFC 3986 style): all but printable ASCII, and %.
_PERCENT_ENCODED = bytes(b for b in range(256) if not 0x20 <= b < 0x7F or b == 0x25)


def trailer_bytes(error: grpc.RpcError) -> int:
    """What an error's trailers weigh against grpcio's metadata limits, counted as grpcio
    does: name, value and 32 bytes an entry, ``grpc-message`` as sent (percent-encoded),
    binary values as bytes."""
    message = (error.details() or "").encode()
    escaped = len(message) - len(message.translate(None, _PERCENT_ENCODED))
    size = len("grpc-message") + len(message) + 2 * escaped + 32
    for entry in error.trailing_metadata() or ():
        size += len(entry.key) + len(entry.value) + 32
    return size


def failure(error: grpc.RpcError | None) -> str | None:
    """Why an answer is one no request may get, or ``None`` for a fair answer."""
    if error is None:
        return None
    code = error.code()
    if code in FORBIDDEN:
        return f"{code.name}: {error.details()}"
    size = trailer_bytes(error)
    if size > TRAILER_BUDGET:
        return (
            f"{code.name} with {size} bytes of trailers, past the {TRAILER_BUDGET} where a grpcio "
            f"client starts to drop them (it sees RESOURCE_EXHAUSTED): {error.details()!r:.300}"
        )
    return None


def outcome(call: Callable[..., Any], request: Any, caller: Caller) -> grpc.RpcError | None:
    """The error of one call with a deadline, or ``None`` when it succeeded."""
    try:
        call(request, timeout=TIMEOUT, metadata=caller.metadata)
    except grpc.RpcError as error:
        return error
    return None


def assert_everyone_serving(fleet: Fleet) -> None:
    for name, running in fleet.services.items():
        health = health_pb2_grpc.HealthStub(fleet.channel(name))
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, running.address


def callers(fleet: Fleet) -> st.SearchStrategy[str]:
    """Caller names: Hypothesis prints a name, where a Caller would print a whole JWT."""
    return st.sampled_from([c.name for c in fleet.callers])


def describe(request: message.Message) -> str:
    """A request on one line; a large one summed up, field by field (formatting megabytes
    for every failing try would slow the shrinker down, and Hypothesis prints it whole)."""
    size = request.ByteSize()
    if size <= 2048:
        return text_format.MessageToString(request, as_one_line=True, as_utf8=True)
    parts = []
    for field, value in request.ListFields():
        if field.is_repeated:
            parts.append(f"{field.name}: [{len(value)} items]")
        elif field.message_type is not None:
            parts.append(f"{field.name} {{{describe(value)}}}")
        else:
            parts.append(f"{field.name}: {value!r:.80}")
    return f"<{size} bytes> " + " ".join(parts)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("cinema.v1."))
def test_no_request_fails_inside_the_service(
    fleet: Fleet, method: descriptor.MethodDescriptor
) -> None:
    call = unary(fleet, method, raw=False)

    @settings(FUZZ, max_examples=REQUEST_EXAMPLES)
    @given(request=requests(method, fleet.seeds), caller=callers(fleet))
    def one_call(request: message.Message, caller: str) -> None:
        mark = fleet.log.mark()
        error = outcome(call, request, fleet.caller(caller))
        why = failure(error)
        if why is not None:
            pytest.fail(
                f"{method.full_name}({describe(request)}) as {caller} -> {why}\n"
                f"server log:\n{fleet.log.since(mark)}"
            )

    one_call()
    assert_everyone_serving(fleet)


LISTS = [m for m in METHODS if "page_token" in m.input_type.fields_by_name]


@pytest.mark.parametrize("method", LISTS, ids=lambda m: m.full_name.removeprefix("cinema.v1."))
def test_no_page_token_fails_inside_the_service(
    fleet: Fleet, method: descriptor.MethodDescriptor
) -> None:
    """Page tokens get a test of their own: in a whole generated request a crafted token
    is one field of many, and one that gets past the fingerprint check (a real token of
    this list, its key replaced) is rarer still."""
    call = unary(fleet, method, raw=False)

    @settings(FUZZ, max_examples=TOKEN_EXAMPLES)
    @given(token=page_tokens(fleet.seeds), caller=callers(fleet))
    def one_call(token: str, caller: str) -> None:
        mark = fleet.log.mark()
        request = build_message(method.input_type, {"page_size": 1, "page_token": token})
        why = failure(outcome(call, request, fleet.caller(caller)))
        if why is not None:
            pytest.fail(
                f"{method.full_name}({describe(request)}) as {caller} -> {why}\n"
                f"server log:\n{fleet.log.since(mark)}"
            )

    one_call()
    assert_everyone_serving(fleet)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("cinema.v1."))
@pytest.mark.parametrize("raw", UNDECODABLE, ids=lambda b: b.hex())
def test_undecodable_bytes_are_invalid_argument(
    fleet: Fleet, method: descriptor.MethodDescriptor, raw: bytes
) -> None:
    if raw == b"\n\x02\xff\xfe":
        field_1 = method.input_type.fields_by_number.get(1)
        if field_1 is None or field_1.type != descriptor.FieldDescriptor.TYPE_STRING:
            raw = b"\x0a\x05ab"  # not a string field here: a truncated length instead
    with pytest.raises(message.DecodeError):  # sure of the premise: protobuf refuses these bytes
        message_class(method.input_type).FromString(raw)
    call = unary(fleet, method, raw=True)
    for caller in (fleet.caller("admin"), fleet.caller("anonymous")):
        error = outcome(call, raw, caller)
        assert error is not None, f"{method.full_name} accepted {raw!r}"
        refused = call_error(error)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "MALFORMED_REQUEST",
        ), f"{method.full_name} {raw!r} as {caller.name}: {refused}"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.full_name.removeprefix("cinema.v1."))
def test_random_bytes_are_refused_or_served_never_failed(
    fleet: Fleet, method: descriptor.MethodDescriptor
) -> None:
    call = unary(fleet, method, raw=True)
    decode = message_class(method.input_type).FromString

    @settings(FUZZ, max_examples=BYTES_EXAMPLES)
    @given(raw=st.binary(max_size=64), caller=callers(fleet))
    def one_call(raw: bytes, caller: str) -> None:
        try:
            decode(raw)
            decodes = True
        except message.DecodeError:
            decodes = False
        mark = fleet.log.mark()
        error = outcome(call, raw, fleet.caller(caller))
        code = error.code() if error is not None else grpc.StatusCode.OK
        if not decodes:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{raw!r} -> {code.name}"
        why = failure(error)
        if why is not None:
            pytest.fail(
                f"{method.full_name} bytes {raw!r} as {caller} -> {why}\n"
                f"server log:\n{fleet.log.since(mark)}"
            )

    one_call()
    assert_everyone_serving(fleet)
