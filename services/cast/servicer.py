"""gRPC servicer of cinema.v1.CastService: proto -> domain -> proto, nothing else.

Use cases are blocking (SQLAlchemy) and run in the server's worker thread that serves
the call (services/common/server.py).
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from cinema.v1 import cast_pb2, cast_pb2_grpc
from services.cast.domain import Cast, CastFields
from services.cast.service import CastService
from services.common.interceptors import current_request
from services.common.wire import populated_fields, timestamp


def cast_to_proto(cast: Cast) -> cast_pb2.Cast:
    message = cast_pb2.Cast(
        id=cast.id,
        name=cast.name,
        create_time=timestamp(cast.create_time),
        update_time=timestamp(cast.update_time),
    )
    if cast.nationality is not None:
        message.nationality = cast.nationality
    return message


def _fields(message: cast_pb2.Cast) -> CastFields:
    nationality = message.nationality if message.HasField("nationality") else None
    return CastFields(name=message.name, nationality=nationality)


class CastServicer(cast_pb2_grpc.CastServiceServicer):
    def __init__(self, service: CastService) -> None:
        self._service = service

    def CreateCast(
        self, request: cast_pb2.CreateCastRequest, context: grpc.ServicerContext
    ) -> cast_pb2.Cast:
        cast = self._service.create_cast(
            _fields(request.cast), current_request(), request_id=request.request_id
        )
        return cast_to_proto(cast)

    def GetCast(
        self, request: cast_pb2.GetCastRequest, context: grpc.ServicerContext
    ) -> cast_pb2.Cast:
        cast = self._service.get_cast(request.id)
        return cast_to_proto(cast)

    def ListCasts(
        self, request: cast_pb2.ListCastsRequest, context: grpc.ServicerContext
    ) -> cast_pb2.ListCastsResponse:
        page = self._service.list_casts(request.page_size, request.page_token)
        return cast_pb2.ListCastsResponse(
            casts=[cast_to_proto(c) for c in page.items], next_page_token=page.next_page_token
        )

    def UpdateCast(
        self, request: cast_pb2.UpdateCastRequest, context: grpc.ServicerContext
    ) -> cast_pb2.Cast:
        cast = self._service.update_cast(
            request.cast.id,
            _fields(request.cast),
            list(request.update_mask.paths),
            populated_fields(request.cast),
            current_request(),
        )
        return cast_to_proto(cast)

    def DeleteCast(
        self, request: cast_pb2.DeleteCastRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._service.delete_cast(request.id, current_request())
        return empty_pb2.Empty()

    def BatchGetCasts(
        self, request: cast_pb2.BatchGetCastsRequest, context: grpc.ServicerContext
    ) -> cast_pb2.BatchGetCastsResponse:
        casts = self._service.batch_get_casts(list(request.ids))
        return cast_pb2.BatchGetCastsResponse(casts=[cast_to_proto(c) for c in casts])
