"""OTLP span export at a fraction of the SDK encoder's cost: the same bytes, written directly.

The OTLP/gRPC exporter (opentelemetry-exporter-otlp-proto-grpc) turns each batch of spans
into an ``ExportTraceServiceRequest`` by building a protobuf object per span, per attribute
and per attribute value, and groups the spans by hashing their ``Resource``, which
serialises its attributes to JSON once per span. In a traced process that encoder was more
than half of what a recorded span cost (a py-spy profile, docs/benchmarks.md, "What
telemetry costs"), on the service's own cores and under its GIL.

:func:`encode_spans` writes the protobuf wire format of the same request itself: a span's
ids, times, kind, flags and status are a few ``struct`` packs, an attribute's key and value
are encoded once and then reused from a bounded cache (a server span's attributes are the
same for every call of a method), and a resource or scope is encoded once per object. A span
this encoder does not write itself (events, links, an attribute value other than a string,
bool, int64 or float) is encoded by the SDK's own ``_encode_span``, so every span comes out
exactly as the SDK would send it; ``tests/unit/test_otlp_spans.py`` checks that against the
SDK encoder on generated spans.

:class:`OTLPSpanExporter` is the SDK's exporter with only its translation step replaced: the
endpoint, headers, TLS, compression, timeout, retries and reconnects stay the SDK's, read
from the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import _encode_attributes
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as _SDKSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AnyValue, Attributes

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_INT64 = range(-(1 << 63), 1 << 63)

# Span.kind (field 6) as written: the OTLP enum is the API's value plus one.
_KIND = {kind: bytes((0x30, kind.value + 1)) for kind in SpanKind}
# Span.flags (field 16, fixed32): the parent's remoteness is known (0x100), and true (0x200).
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)
_EMPTY_STATUS = b"\x7a\x00"  # Span.status (field 15), unset: the SDK always sends one

# What repeats from span to span, encoded once: attributes by (key, value type, value), a
# span's attributes together by their items, span names, resources and scopes. Each is
# cleared when it reaches this many entries.
_CACHE_LIMIT = 4096
_CACHEABLE = frozenset((str, int, bool))
_attributes: dict[tuple[str, type, Any], bytes] = {}
_blocks: dict[tuple[tuple[tuple[str, Any], ...], tuple[type, ...]], bytes] = {}
_names: dict[str, bytes] = {}
# Encoded resources and scopes by id(), with the object kept so that its id stays its own.
_objects: dict[int, tuple[object, bytes]] = {}


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length and the payload."""
    return tag + _varint(len(payload)) + payload


class _Unsupported(Exception):
    """A value this encoder leaves to the SDK's own."""


def _any_value(value: object) -> bytes:
    """An ``AnyValue`` holding a string, bool, int64 or float, as the SDK's _encode_value."""
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if value not in _INT64:
            raise _Unsupported
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    raise _Unsupported


def _key_value(key: str, value: object) -> bytes:
    """One encoded ``KeyValue`` (without its field tag), from the cache when it is there.

    A cache key holds the value's type, since ``1``, ``1.0`` and ``True`` are equal keys,
    and only strings, ints and bools are cached (``0.0`` and ``-0.0`` are equal too, NaN
    equals nothing, and a subclass may define equality its own way).
    """
    cache_key = (key, type(value), value)
    try:
        return _attributes[cache_key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: a list or a mapping
        raise _Unsupported from None
    encoded_key = key.encode()
    body = (_field(b"\x0a", encoded_key) if encoded_key else b"") + _field(
        b"\x12", _any_value(value)
    )
    if type(value) in _CACHEABLE:
        if len(_attributes) >= _CACHE_LIMIT:
            _attributes.clear()
        _attributes[cache_key] = body
    return body


def _attribute_fields(tag: bytes, attributes: Attributes) -> list[bytes]:
    if not attributes:
        return []
    return [_field(tag, _key_value(key, value)) for key, value in attributes.items()]


def _span_attributes(attributes: Mapping[str, AnyValue]) -> bytes:
    """A span's attributes (field 9), all of them at once from the cache when they repeat
    (keyed by the items and their values' types, under :func:`_key_value`'s rule)."""
    items = tuple(attributes.items())
    types = tuple(type(value) for _, value in items)
    try:
        return _blocks[items, types]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: a list or a mapping
        raise _Unsupported from None
    block = b"".join(_attribute_fields(b"\x4a", attributes))
    if _CACHEABLE.issuperset(types):
        if len(_blocks) >= _CACHE_LIMIT:
            _blocks.clear()
        _blocks[items, types] = block
    return block


def _name(name: str) -> bytes:
    """A span's name (field 5) with its tag, from the cache when it repeats."""
    try:
        return _names[name]
    except KeyError:
        encoded = _names[name] = _field(b"\x2a", name.encode()) if name else b""
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        return encoded


def _span(span: ReadableSpan) -> bytes:
    """One encoded ``Span`` (without its field tag)."""
    if span.events or span.links:
        raise _Unsupported
    context = span.get_span_context()
    if context is None:
        raise _Unsupported  # (and the SDK's encoder refuses it too)
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    trace_state = context.trace_state
    if trace_state:
        parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in trace_state.items()).encode()))
    parent = span.parent
    if parent:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    parts += (_name(span.name), _KIND[span.kind])
    if span.start_time:
        parts += (b"\x39", _pack_q(span.start_time))
    if span.end_time:
        parts += (b"\x41", _pack_q(span.end_time))
    attributes = span.attributes  # a new read-only view each time it is asked for
    if attributes:
        parts.append(_span_attributes(attributes))
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    if span.dropped_events:
        parts += (b"\x60", _varint(span.dropped_events))
    if span.dropped_links:
        parts += (b"\x70", _varint(span.dropped_links))
    status = span.status
    code = status.status_code.value
    description = status.description
    if code or description:
        body = (_field(b"\x12", description.encode()) if description else b"") + (
            b"\x18" + _varint(code) if code else b""
        )
        parts.append(_field(b"\x7a", body))
    else:
        parts.append(_EMPTY_STATUS)
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _encoded_span(span: ReadableSpan) -> bytes:
    try:
        return _span(span)
    except (_Unsupported, UnicodeEncodeError):
        return _encode_span(span).SerializeToString()  # the SDK's, exactly


def _cached(item: object, encode: Any) -> bytes:
    entry = _objects.get(id(item))
    if entry is None or entry[0] is not item:
        if len(_objects) >= _CACHE_LIMIT:
            _objects.clear()
        entry = _objects[id(item)] = (item, encode(item))
    return entry[1]


def _resource(resource: Any) -> bytes:
    """``ResourceSpans.resource`` (field 1) with its tag."""
    return _field(b"\x0a", b"".join(_sdk_attributes(resource.attributes)))


def _scope(scope: Any) -> bytes:
    """``ScopeSpans.scope`` (field 1) with its tag."""
    if scope is None:
        return b"\x0a\x00"
    parts = []
    if scope.name:
        parts.append(_field(b"\x0a", scope.name.encode()))
    if scope.version:
        parts.append(_field(b"\x12", scope.version.encode()))
    parts += _sdk_attributes(scope.attributes, b"\x1a")
    return _field(b"\x0a", b"".join(parts))


def _sdk_attributes(attributes: Attributes, tag: bytes = b"\x0a") -> list[bytes]:
    """Attributes of a resource or scope: by the SDK's encoder for a value ours leaves to it."""
    try:
        return _attribute_fields(tag, attributes)
    except (_Unsupported, UnicodeEncodeError):
        return [_field(tag, kv.SerializeToString()) for kv in _encode_attributes(attributes)]


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialised ``ExportTraceServiceRequest`` of ``spans``: the message the SDK's
    ``encode_spans`` builds, spans grouped by resource and then by instrumentation scope in
    the order they first appear (each group keyed by equality, as the SDK's; but an object
    is compared once and then found by identity, since hashing a ``Resource`` serialises
    its attributes to JSON)."""
    resources: list[list[Any]] = []  # [resource, [[scope, [span, ...]], ...], scope index]
    by_resource: dict[int, list[Any]] = {}
    for span in spans:
        group = by_resource.get(id(span.resource))
        if group is None:
            group = next((g for g in resources if g[0] == span.resource), None)
            if group is None:
                group = [span.resource, [], {}]
                resources.append(group)
            by_resource[id(span.resource)] = group
        scope = span.instrumentation_scope or None
        scoped = group[2].get(id(scope))
        if scoped is None:
            scoped = next((s for s in group[1] if s[0] == scope), None)
            if scoped is None:
                scoped = [scope, []]
                group[1].append(scoped)
            group[2][id(scope)] = scoped
        scoped[1].append(_field(b"\x12", _encoded_span(span)))
    request = []
    for resource, scopes, _ in resources:
        body = [_cached(resource, _resource)]
        for scope, encoded in scopes:
            scope_spans = [_cached(scope, _scope), *encoded]
            if scope is not None and scope.schema_url:
                scope_spans.append(_field(b"\x1a", scope.schema_url.encode()))
            body.append(_field(b"\x12", b"".join(scope_spans)))
        if resource.schema_url:
            body.append(_field(b"\x1a", resource.schema_url.encode()))
        request.append(_field(b"\x0a", b"".join(body)))
    return b"".join(request)


class OTLPSpanExporter(_SDKSpanExporter):
    """The SDK's OTLP/gRPC span exporter with :func:`encode_spans` as its translation."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        # Parsing the bytes back is C (upb) and cheap; the stub then serialises them again.
        return ExportTraceServiceRequest.FromString(encode_spans(data))
