"""The two server interceptors every Cinema service runs, outermost first.

1. :class:`ErrorMappingInterceptor` turns a :class:`~services.common.errors.DomainError`
   into its canonical status (via :mod:`services.common.status`) and anything unexpected
   into INTERNAL with a generic message, logging the traceback.
2. :class:`AuthorizationInterceptor` authenticates ``authorization: Bearer <JWT>`` and
   enforces the ``(cinema.v1.access)`` option that every RPC declares in its proto, before
   the handler runs. The handler reads the caller with :func:`current_request`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from functools import cache
from typing import Any, TypeAlias

import grpc
from google.protobuf import descriptor_pool

from cinema.v1 import access_pb2
from services.common import errors, handled_calls, status
from services.common.auth import TokenVerifier
from services.common.context import CALL_ID_MAX, CALL_ID_METADATA, Deadline, RequestContext
from services.common.revocations import Revocations
from services.common.text_fields import nul_violations

logger = logging.getLogger(__name__)

_CINEMA_PREFIX = "/cinema.v1."
_request: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("cinema_request")

# grpc-stubs makes these generic; grpcio's runtime classes are not subscriptable.
Behavior: TypeAlias = "Callable[[Any, grpc.ServicerContext], Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Handler | None]"


def current_request() -> RequestContext:
    """The caller and deadline of the RPC being served (set by the interceptor)."""
    return _request.get()


class _WrappingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps each unary-unary handler once per method and reuses the wrapped handler:
    grpcio asks the interceptor for a handler on every call, and building a new one each
    time showed in the per-call profile."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def wrap(self, method: str, behavior: Behavior) -> Behavior:  # pragma: no cover - abstract
        raise NotImplementedError

    def deserializer(self, decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """The request deserializer of the wrapped handler (the handler's own by default)."""
        return decode

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = continuation(handler_call_details)
        # Only unary-unary RPCs are Cinema's own; health Watch and reflection streams pass by.
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self.wrap(method, handler.unary_unary),
            request_deserializer=self.deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class _Undecodable:
    """Stands in for a request whose bytes did not decode as the RPC's message."""


_UNDECODABLE = _Undecodable()


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Domain errors to canonical codes with google.rpc details; the rest to INTERNAL.

    Requests are decoded inside its reach too: grpcio decodes before any interceptor
    runs and answers an undecodable request with INTERNAL (a 500 through Envoy), so the
    wrapped deserializer hands such a request on as :data:`_UNDECODABLE`, which becomes
    INVALID_ARGUMENT with no detail of the decoder's exception.
    """

    def deserializer(self, decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        if decode is None:
            return None

        def tolerant(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception:
                return _UNDECODABLE

        return tolerant

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        def mapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                if request is _UNDECODABLE:
                    raise errors.InvalidArgument(
                        [errors.FieldViolation("request", "is not a valid message of this RPC")],
                        "the request could not be decoded",
                        reason="MALFORMED_REQUEST",
                    )
                refused = nul_violations(request)
                if refused:
                    raise errors.InvalidArgument(refused)
                return behavior(request, context)
            except errors.DomainError as error:
                rpc_status = status.to_rpc_status(error)
                logger.info(
                    "%s -> %s: %s", method, status.status_code_for(error).name, rpc_status.message
                )
            except Exception:
                logger.exception("unexpected error in %s", method)
                rpc_status = status.internal_status()
            context.abort_with_status(status.as_grpc_status(rpc_status))

        return mapped


@cache
def access_of(method: str) -> int:
    """The ``(cinema.v1.access)`` option of ``/cinema.v1.Service/Method``."""
    full_name = method.lstrip("/").replace("/", ".")
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(full_name)
    except KeyError:
        return access_pb2.ACCESS_UNSPECIFIED
    return int(descriptor.GetOptions().Extensions[access_pb2.access])


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an ``authorization: Bearer ...`` header; raises if malformed."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthenticated("authorization must be 'Bearer <access token>'")
            return token.strip()
    return None


def call_id(metadata: Any) -> str | None:
    """The gateway's id of this call (:data:`CALL_ID_METADATA`), when there is a usable one."""
    for key, value in metadata or ():
        if key == CALL_ID_METADATA and isinstance(value, str) and 0 < len(value) <= CALL_ID_MAX:
            return value
    return None


class AuthorizationInterceptor(_WrappingInterceptor):
    """Checks every cinema.v1 RPC against the access rule its proto declares."""

    def __init__(
        self,
        verifier: TokenVerifier,
        revocations: Revocations | None = None,
        handled_call: Callable[[str, str], bool] | None = None,
    ) -> None:
        super().__init__()
        self._verifier = verifier
        self._revocations = revocations
        self._handled_call = handled_call

    def authorize(self, method: str, metadata: Any, deadline: Deadline) -> RequestContext:
        """The request context of an allowed call; raises Unauthenticated/PermissionDenied."""
        access = access_of(method)
        token = bearer_token(metadata)
        principal = self._verifier.verify(token) if token is not None else None
        if (
            principal is not None
            and self._revocations is not None
            and self._revocations.is_revoked(principal.session_id)
            and not self._is_handled(method, metadata)
        ):
            raise errors.Unauthenticated(
                "this session has ended: log in again", reason="SESSION_REVOKED"
            )
        if access == access_pb2.ACCESS_PUBLIC:
            pass
        elif access in (access_pb2.ACCESS_AUTHENTICATED, access_pb2.ACCESS_ADMIN):
            if principal is None:
                raise errors.Unauthenticated("this call needs an access token")
            if access == access_pb2.ACCESS_ADMIN and not principal.is_admin:
                raise errors.PermissionDenied("only an admin may do this")
        else:
            raise errors.PermissionDenied(f"{method} declares no access rule")
        return RequestContext(
            principal=principal, bearer_token=token, deadline=deadline, call_id=call_id(metadata)
        )

    def _is_handled(self, method: str, metadata: Any) -> bool:
        """Whether this call is a repeat of one the service carried out: a token whose
        session that call ended may fetch its answer (services/common/handled_calls.py)."""
        if self._handled_call is None or method not in handled_calls.RECORDED:
            return False  # never a database read for a call that cannot be a replay
        repeated = call_id(metadata)
        return repeated is not None and self._handled_call(method.rpartition("/")[2], repeated)

    def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        if not handler_call_details.method.startswith(_CINEMA_PREFIX):
            return continuation(handler_call_details)  # health and reflection are open to all
        return super().intercept_service(continuation, handler_call_details)

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        def authorized(request: Any, context: grpc.ServicerContext) -> Any:
            deadline = Deadline.after(context.time_remaining())
            request_context = self.authorize(method, context.invocation_metadata(), deadline)
            token = _request.set(request_context)
            try:
                return behavior(request, context)
            finally:
                _request.reset(token)

        return authorized


_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class TracingInterceptor(_WrappingInterceptor):
    """A server span per recorded call (OpenTelemetry), continuing the caller's W3C
    traceparent.

    Ours rather than opentelemetry-instrumentation-grpc's server interceptor: that one
    builds a wrapped handler, a wrapped servicer context and the span's attributes on every
    call, sampled or not, which cost GetMovie about 30 % of its throughput at 1 % sampling
    (``python -m bench.telemetry``, docs/benchmarks.md). Here the handler is wrapped once
    per method, and a call that is not recorded gets a bare context from
    :func:`services.common.tracing.unsampled_context` and never meets the SDK. A recorded
    call's span is a :class:`services.common.served_spans.ServedCallSpan` (the SDK's span
    when another sampler than Cinema's is configured), with the call's final code as its
    status, read from the servicer context once the inner interceptors are done
    (``tracing.record_status``). Health checks (Envoy's, each second) start no span.
    """

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        if method.startswith(_HEALTH_PREFIX):
            return behavior
        from opentelemetry import context as otel_context
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind

        from services.common.tracing import record_status, served_spans, unsampled_context

        tracer = trace.get_tracer("cinema.server")
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        extract, attach, detach = propagate.extract, otel_context.attach, otel_context.detach
        get_current_span, set_span_in_context = trace.get_current_span, trace.set_span_in_context

        def traced(request: Any, context: grpc.ServicerContext) -> Any:
            carrier = {k: v for k, v in context.invocation_metadata() if k in _TRACE_HEADERS}
            parent = extract(carrier) if carrier else None
            quiet = unsampled_context(parent)
            if quiet is not None:
                token = attach(quiet)
                try:
                    return behavior(request, context)
                finally:
                    detach(token)
            served = served_spans()
            if served is None:  # another sampler: the SDK's span, and its sampler decides
                with tracer.start_as_current_span(
                    method,
                    context=parent,
                    kind=SpanKind.SERVER,
                    attributes=attributes,
                    record_exception=False,
                    set_status_on_exception=False,
                ):
                    try:
                        return behavior(request, context)
                    finally:
                        code = context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
                        record_status(code, context.details() or "")  # type: ignore[attr-defined]
            caller = None if parent is None else get_current_span(parent).get_span_context()
            span = served.start(method, caller, attributes)
            token = attach(set_span_in_context(span))
            try:
                return behavior(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
                record_status(code, context.details() or "")  # type: ignore[attr-defined]
                detach(token)
                span.end()

        return traced
