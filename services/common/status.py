"""The one place where domain errors become gRPC statuses.

Every error leaves a Cinema service as a canonical code with a ``google.rpc.Status`` in
the ``grpc-status-details-bin`` trailer: ``ErrorInfo`` (reason, domain ``cinema.v1``,
metadata) always, ``BadRequest`` field violations for bad input. Envoy's transcoder turns
the same status into the JSON error body with the matching HTTP status.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import errors

ERROR_DOMAIN = "cinema.v1"

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    """The canonical code of a domain error (most specific class wins)."""
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


# An error travels in the trailers (grpc-message, and grpc-status-details-bin in base64),
# and grpcio clients drop trailers over 8 KiB at random and over 16 KiB always: the caller
# then sees RESOURCE_EXHAUSTED instead of its error. A request with 1000 bad ids made 40 KB.
# So what an error says is bounded here, whatever the request: the first violations in
# full, then a count, and every text clipped. About 5 KiB at most.
MAX_VIOLATIONS = 10
_MAX_MESSAGE = 512
_MAX_FIELD = 120
_MAX_DESCRIPTION = 160
_MAX_METADATA_VALUE = 200


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _violations(
    violations: list[errors.FieldViolation],
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    shown = [
        error_details_pb2.BadRequest.FieldViolation(
            field=_clip(v.field, _MAX_FIELD), description=_clip(v.description, _MAX_DESCRIPTION)
        )
        for v in violations[:MAX_VIOLATIONS]
    ]
    if len(violations) > MAX_VIOLATIONS:
        shown.append(
            error_details_pb2.BadRequest.FieldViolation(
                field="request",
                description=f"and {len(violations) - MAX_VIOLATIONS} more violations not shown",
            )
        )
    return shown


def to_rpc_status(error: errors.DomainError) -> status_pb2.Status:
    """A ``google.rpc.Status`` with ErrorInfo and, for bad input, BadRequest details,
    bounded in size (see :data:`MAX_VIOLATIONS`)."""
    code = status_code_for(error)
    metadata = {
        _clip(key, _MAX_FIELD): _clip(value, _MAX_METADATA_VALUE)
        for key, value in list(error.metadata.items())[:MAX_VIOLATIONS]
    }
    details = [
        _pack(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
        )
    ]
    message = error.message
    if isinstance(error, errors.InvalidArgument):
        details.append(
            _pack(error_details_pb2.BadRequest(field_violations=_violations(error.violations)))
        )
        if len(error.violations) > MAX_VIOLATIONS and message.startswith("invalid request: "):
            shown = errors.summarize(error.violations[:3])
            message = f"invalid request: {shown}; and {len(error.violations) - 3} more"
    if isinstance(error, errors.ResourceExhausted) and error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(0, int(error.retry_after * 1000)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(
        code=code.value[0], message=_clip(message, _MAX_MESSAGE), details=details
    )


def internal_status() -> status_pb2.Status:
    """What a caller sees of an unexpected failure: a generic message, nothing inside."""
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
    )


def as_grpc_status(status: status_pb2.Status) -> grpc.Status:
    """The ``grpc.Status`` (code, message, details trailer) to abort a call with. A
    RetryInfo also goes out as ``retry-after`` (whole seconds), which Envoy's transcoder
    passes to JSON clients as the HTTP header they know."""
    converted = rpc_status.to_status(status)
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            seconds = max(1, math.ceil(info.retry_delay.ToTimedelta().total_seconds()))
            metadata = (*converted.trailing_metadata, ("retry-after", str(seconds)))
            return _Status(converted.code, converted.details, metadata)
    return converted


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def bad_request_violations(status: status_pb2.Status) -> list[errors.FieldViolation]:
    """Field violations carried in a ``google.rpc.Status`` (for clients and tests)."""
    found: list[errors.FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend(
                errors.FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
    return found
