"""Reading gRPC errors the way a client does: code, message and google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class CallError:
    code: grpc.StatusCode
    message: str
    reason: str
    violations: dict[str, str]


def call_error(error: grpc.RpcError) -> CallError:
    """The status of a failed call, with ErrorInfo reason and BadRequest violations."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason = ""
    violations: dict[str, str] = {}
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.update({v.field: v.description for v in bad.field_violations})
    return CallError(error.code(), error.details() or "", reason, violations)
