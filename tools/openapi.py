"""The OpenAPI 3.1 document of Cinema's JSON API, generated from the contracts.

No OpenAPI generator for protos installs here (grpc-gateway's and gnostic's are Go, Debian's
``protoc-gen-swagger`` rejects proto3 ``optional``), so this one reads the descriptor set
``tools/protogen.py`` builds (``gen/descriptors/cinema.binpb``, with source info) and
describes what Envoy's gRPC-JSON transcoder serves:

* every ``google.api.http`` rule (:func:`gateway.http_bindings.bindings_in`, the same rules
  the Envoy config and the README's route table use) as one operation, with its path
  parameters, its query parameters (request fields bound neither in the path nor by the
  body, nested ones in dotted form) and its body (``body: "*"`` or one request field);
* bodies in proto3 canonical JSON, as the transcoder prints them: lowerCamelCase names,
  64-bit integers as strings, enums by name, Timestamp/Duration/FieldMask as strings;
* ``google.api.field_behavior``: REQUIRED fields are ``required``, OUTPUT_ONLY ones
  ``readOnly`` and INPUT_ONLY ones ``writeOnly``; a PATCH body lists no required fields,
  since an update sends only what it changes;
* the proto comments as descriptions, ``(cinema.v1.access)`` as bearer auth, and the error
  statuses each route can answer with the ``google.rpc.Status`` JSON body.

``python tools/openapi.py`` prints the document of the committed descriptor set;
``python tools/protogen.py`` writes it to ``gen/openapi/cinema.openapi.json``, and
``--against OLD.binpb`` lists the routes of an older contract that are gone (buf breaking does
not look at HTTP rules; ``scripts/check-breaking`` runs both).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

from gateway.http_bindings import FILES, HttpBinding, bindings_in

ROOT = pathlib.Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = ROOT / "gen" / "descriptors" / "cinema.binpb"
OPENAPI_VERSION = "3.1.0"

JsonObject = dict[str, Any]

#: RPCs that answer ALREADY_EXISTS (409), and when. The contracts do not declare which codes
#: an RPC raises beyond what its shape implies; this is what the services raise, kept next to
#: the generator (which fails on a name that is not an RPC) until the protos say it.
CONFLICTS: dict[str, str] = {
    "cinema.v1.UserService.CreateUser": "the email is already in use by another account.",
    "cinema.v1.UserService.UpdateUser": "the new email is already in use by another account.",
    "cinema.v1.OrderService.CreateOrder": (
        "the `requestId` was used before for an order with other items."
    ),
    "cinema.v1.OrderService.PayOrder": (
        "the `requestId` was used before for a payment with another token."
    ),
}

_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_STATUS = "google.rpc.Status"
_ANY = "google.protobuf.Any"
#: Error details Cinema's services put into every status: ``ErrorInfo`` always and
#: ``BadRequest`` for bad input (services/common/status.py). Not proto names, so they
#: cannot collide with a message's component.
_DETAILS = {"ErrorInfoDetail": "google.rpc.ErrorInfo", "BadRequestDetail": "google.rpc.BadRequest"}
#: Suffix of the component of a message sent as a PATCH body; ``-`` is not allowed in proto
#: names, so it cannot collide with a message either.
_PATCH = "-Patch"
_ACCESS_PUBLIC = "ACCESS_PUBLIC"

_T = descriptor.FieldDescriptor
_SCALARS: dict[int, JsonObject] = {
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    _T.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    # Proto3 JSON writes 64-bit integers as strings: a JavaScript number loses precision
    # past 2**53. Parsers accept a number too, but a client must expect a string.
    _T.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _T.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _T.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    _T.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    _T.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
}
_WRAPPERS = {
    "google.protobuf.DoubleValue": _T.TYPE_DOUBLE,
    "google.protobuf.FloatValue": _T.TYPE_FLOAT,
    "google.protobuf.Int64Value": _T.TYPE_INT64,
    "google.protobuf.UInt64Value": _T.TYPE_UINT64,
    "google.protobuf.Int32Value": _T.TYPE_INT32,
    "google.protobuf.UInt32Value": _T.TYPE_UINT32,
    "google.protobuf.BoolValue": _T.TYPE_BOOL,
    "google.protobuf.StringValue": _T.TYPE_STRING,
    "google.protobuf.BytesValue": _T.TYPE_BYTES,
}
#: Well-known types whose JSON is not an object of their fields: written inline.
_WELL_KNOWN: dict[str, JsonObject] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "examples": ["1.5s"],
    },
    # The JSON form of a FieldMask is one string of lowerCamelCase paths joined by commas.
    "google.protobuf.FieldMask": {
        "type": "string",
        "format": "field-mask",
        "examples": ["title,price"],
    },
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    **{
        name: {**_SCALARS[kind], "type": [_SCALARS[kind]["type"], "null"]}
        for name, kind in _WRAPPERS.items()
    },
}
_METHOD_ORDER = ("get", "put", "post", "delete", "patch")


@dataclass
class _Index:
    """What the descriptors themselves do not carry: comments and synthetic oneofs."""

    comments: dict[str, str] = field(default_factory=dict)
    #: Full names of the oneofs protoc makes for proto3 ``optional`` fields.
    synthetic_oneofs: set[str] = field(default_factory=set)

    def comment(self, full_name: str) -> str:
        return self.comments.get(full_name, "")


def _clean(comment: str) -> str:
    # protoc keeps the space after `//` on every line; drop it and keep the rest (Markdown).
    lines = [line[1:] if line.startswith(" ") else line for line in comment.splitlines()]
    # Linter directives are for buf, not for the API's readers.
    kept = [line.rstrip() for line in lines if not line.lstrip().startswith("buf:lint:")]
    return "\n".join(kept).strip()


class _Walk:
    """Collects one file's comments into an :class:`_Index`, by full name."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto, index: _Index) -> None:
        self._index = index
        # A source location's path: field numbers and indexes from the file down to the
        # element (4 = message_type, 2 = field, ...; see descriptor.proto).
        self._located = {
            tuple(location.path): _clean(location.leading_comments)
            for location in file.source_code_info.location
            if location.leading_comments.strip()
        }
        package = file.package
        for i, message in enumerate(file.message_type):
            self.message(message, (4, i), package)
        for i, enum in enumerate(file.enum_type):
            self.enum(enum, (5, i), package)
        for i, service in enumerate(file.service):
            self.note(f"{package}.{service.name}", (6, i))
            for j, method in enumerate(service.method):
                self.note(f"{package}.{service.name}.{method.name}", (6, i, 2, j))

    def note(self, name: str, path: tuple[int, ...]) -> None:
        if path in self._located:
            self._index.comments[name] = self._located[path]

    def enum(
        self, proto: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str
    ) -> None:
        name = f"{scope}.{proto.name}"
        self.note(name, path)
        for i, value in enumerate(proto.value):
            self.note(f"{name}.{value.name}", (*path, 2, i))

    def message(
        self, proto: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str
    ) -> None:
        name = f"{scope}.{proto.name}"
        self.note(name, path)
        for i, member in enumerate(proto.field):
            self.note(f"{name}.{member.name}", (*path, 2, i))
            if member.proto3_optional:
                oneof = proto.oneof_decl[member.oneof_index]
                self._index.synthetic_oneofs.add(f"{name}.{oneof.name}")
        for i, oneof_decl in enumerate(proto.oneof_decl):
            self.note(f"{name}.{oneof_decl.name}", (*path, 8, i))
        for i, nested in enumerate(proto.nested_type):
            self.message(nested, (*path, 3, i), name)
        for i, nested_enum in enumerate(proto.enum_type):
            self.enum(nested_enum, (*path, 4, i), name)


def _index(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> _Index:
    """Leading comments by full name (enum values as ``Enum.VALUE``), from source info."""
    index = _Index()
    for file in files:
        _Walk(file, index)
    return index


def _behaviours(member: descriptor.FieldDescriptor) -> set[int]:
    options = member.GetOptions()
    return set(options.Extensions[field_behavior_pb2.field_behavior])


def _is_required(member: descriptor.FieldDescriptor) -> bool:
    return field_behavior_pb2.REQUIRED in _behaviours(member)


def _is_map(member: descriptor.FieldDescriptor) -> bool:
    message = member.message_type
    return message is not None and message.GetOptions().map_entry


def _described(schema: JsonObject, description: str) -> JsonObject:
    return {**schema, "description": description} if description else schema


def _summary(description: str) -> str:
    """The first sentence, on one line: what an explorer shows next to the route."""
    text = " ".join(description.split())
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


class _Schemas:
    """``components.schemas``: one entry per message and enum, built on first use."""

    def __init__(self, index: _Index) -> None:
        self._index = index
        self.components: dict[str, JsonObject] = {}

    def ref(self, name: str) -> JsonObject:
        return {"$ref": _SCHEMAS + name}

    def message(self, message: descriptor.Descriptor, *, patch: bool = False) -> JsonObject:
        """A ``$ref`` to the message's schema (or, for a PATCH body, to its variant without
        required fields), or the inline schema of a well-known type."""
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        name = message.full_name
        if patch and any(_is_required(member) for member in message.fields):
            name += _PATCH
        if name not in self.components:
            # Claimed before the fields are built: a message may contain itself.
            self.components[name] = {}
            self.components[name] = self._object(message, patch=patch)
        return self.ref(name)

    def enum(self, enum: descriptor.EnumDescriptor) -> JsonObject:
        if enum.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        if enum.full_name not in self.components:
            lines = [self._index.comment(enum.full_name), ""]
            for value in enum.values:
                note = self._index.comment(f"{enum.full_name}.{value.name}")
                lines.append(f"- `{value.name}`: {' '.join(note.split())}".rstrip(": "))
            self.components[enum.full_name] = {
                "type": "string",
                # Proto3 JSON prints enums by name; the transcoder is set up the same way.
                "enum": [value.name for value in enum.values],
                "description": "\n".join(lines).strip(),
            }
        return self.ref(enum.full_name)

    def value(self, member: descriptor.FieldDescriptor) -> JsonObject:
        """The schema of one value of ``member`` (an element, for a repeated field)."""
        if member.message_type is not None:
            return self.message(member.message_type)
        if member.enum_type is not None:
            return self.enum(member.enum_type)
        if member.type not in _SCALARS:
            raise SystemExit(f"{member.full_name}: no JSON mapping for field type {member.type}")
        return dict(_SCALARS[member.type])

    def field(self, member: descriptor.FieldDescriptor) -> JsonObject:
        """The property schema of ``member``: its value, list or map, described and marked."""
        entry = member.message_type
        if entry is not None and entry.GetOptions().map_entry:
            # Map keys are strings in JSON whatever their proto type.
            schema: JsonObject = {
                "type": "object",
                "additionalProperties": self.value(entry.fields_by_name["value"]),
            }
        elif member.is_repeated:
            schema = {"type": "array", "items": self.value(member)}
        else:
            schema = self.value(member)
        schema = _described(schema, self._index.comment(member.full_name))
        behaviours = _behaviours(member)
        if field_behavior_pb2.OUTPUT_ONLY in behaviours:
            schema["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviours:
            schema["writeOnly"] = True
        return schema

    def _object(self, message: descriptor.Descriptor, *, patch: bool) -> JsonObject:
        description = self._index.comment(message.full_name)
        if patch:
            description += (
                "\n\nAs a PATCH body: only the fields to change (those named in `updateMask`"
                " when it is given), so no field is required."
            )
        return self.fields(message, message.fields, description, patch=patch)

    def fields(
        self,
        message: descriptor.Descriptor,
        members: Sequence[descriptor.FieldDescriptor],
        description: str,
        *,
        patch: bool = False,
    ) -> JsonObject:
        """An object schema of ``members`` of ``message``."""
        oneofs = [
            oneof
            for oneof in message.oneofs
            if oneof.full_name not in self._index.synthetic_oneofs
            and any(member in members for member in oneof.fields)
        ]
        for oneof in oneofs:
            names = ", ".join(f"`{member.json_name}`" for member in oneof.fields)
            description += f"\n\nAt most one of {names} is set (oneof `{oneof.name}`)."
        schema: JsonObject = {"type": "object"}
        if description.strip():
            schema["description"] = description.strip()
        schema["properties"] = {member.json_name: self.field(member) for member in members}
        required = [member.json_name for member in members if _is_required(member)]
        if required and not patch:
            schema["required"] = required
        return schema


def _error_responses() -> dict[str, JsonObject]:
    """``components.responses``: the error answers routes share, all a google.rpc.Status."""

    def answer(description: str, example: JsonObject | None = None) -> JsonObject:
        media: JsonObject = {"schema": {"$ref": _SCHEMAS + _STATUS}}
        if example is not None:
            media["example"] = example
        return {"description": description, "content": {"application/json": media}}

    def info(reason: str, **metadata: str) -> JsonObject:
        detail: JsonObject = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "cinema.v1",
        }
        if metadata:
            detail["metadata"] = metadata
        return detail

    return {
        "BadRequest": answer(
            "INVALID_ARGUMENT (3), FAILED_PRECONDITION (9) or OUT_OF_RANGE (11): the request is"
            " malformed, or the resource is not in a state that allows it. `BadRequest`"
            " details name each bad field. Envoy answers it too for malformed JSON or an"
            " unknown query parameter.",
            {
                "code": 3,
                "message": "invalid request: movie.title: must not be empty",
                "details": [
                    info("INVALID_ARGUMENT"),
                    {
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [
                            {"field": "movie.title", "description": "must not be empty"}
                        ],
                    },
                ],
            },
        ),
        "Unauthorized": answer(
            "UNAUTHENTICATED (16): the access token is missing (on a route that needs one),"
            " malformed, expired, revoked or signed by an unknown key. A public route"
            " needs no token, but refuses one that is sent and not valid."
        ),
        "Forbidden": answer(
            "PERMISSION_DENIED (7): the token is valid but does not allow this call (not an"
            " admin, or not the owner of the resource)."
        ),
        "NotFound": answer(
            "NOT_FOUND (5): no resource has this id.",
            {
                "code": 5,
                "message": "movie 'm-1' not found",
                "details": [info("NOT_FOUND", resource_type="movie", resource_id="m-1")],
            },
        ),
        "PayloadTooLarge": answer(
            "RESOURCE_EXHAUSTED (8): the body is larger than the gateway accepts."
        ),
        "TooManyRequests": answer("RESOURCE_EXHAUSTED (8): too many requests; retry later."),
        "ServiceUnavailable": answer(
            "UNAVAILABLE (14): no healthy replica of the service, or one of its dependencies,"
            " could answer; retrying later may work."
        ),
        "GatewayTimeout": answer("DEADLINE_EXCEEDED (4): the call took longer than its deadline."),
        "Error": answer("Any other error, e.g. INTERNAL (13, HTTP 500) with a generic message."),
    }


def _status_schemas(schemas: _Schemas, pool: descriptor_pool.DescriptorPool) -> None:
    """google.rpc.Status with the details Cinema sends described, not only ``Any``."""
    schemas.message(pool.FindMessageTypeByName(_STATUS))
    schemas.components[_ANY] = {
        "type": "object",
        "description": (
            "A message of any type, as proto3 JSON: its fields plus `@type`, the URL of its"
            " type, e.g. `type.googleapis.com/google.rpc.ErrorInfo`."
        ),
        "properties": {"@type": {"type": "string", "description": "The URL of the type."}},
        "required": ["@type"],
        "additionalProperties": True,
    }
    for name, message in _DETAILS.items():
        schemas.message(pool.FindMessageTypeByName(message))
        schemas.components[name] = {
            "description": f"A `{message}` in the `details` of an error.",
            "allOf": [{"$ref": _SCHEMAS + message}],
            "type": "object",
            "properties": {"@type": {"const": f"type.googleapis.com/{message}"}},
            "required": ["@type"],
        }
    status = schemas.components[_STATUS]
    status["properties"]["details"]["items"] = {
        "anyOf": [schemas.ref(name) for name in _DETAILS] + [schemas.ref(_ANY)]
    }


@dataclass(frozen=True)
class _QueryParameter:
    name: str
    member: descriptor.FieldDescriptor
    required: bool


def _query_parameters(
    message: descriptor.Descriptor,
    taken: set[str],
    prefix: tuple[descriptor.FieldDescriptor, ...] = (),
) -> Iterator[_QueryParameter]:
    """Fields the transcoder fills from the query string: every field not bound in the path
    or the body, a nested message's fields as ``parent.child`` (repeated scalars by
    repeating the parameter; maps and repeated messages cannot be sent in a query)."""
    for member in message.fields:
        path = (*prefix, member)
        proto_path = ".".join(part.name for part in path)
        if proto_path in taken or _is_map(member):
            continue
        nested = member.message_type
        if nested is not None and nested.full_name not in _WELL_KNOWN:
            if member.is_repeated or nested in (part.containing_type for part in path):
                continue
            yield from _query_parameters(nested, taken, path)
            continue
        yield _QueryParameter(
            name=".".join(part.json_name for part in path),
            member=member,
            required=all(_is_required(part) for part in path),
        )


def _field_at(message: descriptor.Descriptor, path: str) -> descriptor.FieldDescriptor:
    """The field a dotted path such as ``movie.id`` names, from ``message`` down."""
    scope: descriptor.Descriptor | None = message
    member = None
    for name in path.split("."):
        if scope is None or name not in scope.fields_by_name:
            raise SystemExit(f"{path!r} names no field of {message.full_name}")
        member = scope.fields_by_name[name]
        scope = member.message_type
    if member is None:
        raise SystemExit(f"an empty field path in {message.full_name}")
    return member


def _parameter_name(variable: str) -> str:
    """The OpenAPI name of a path variable: ``movie.id`` -> ``id``.

    OpenAPI treats ``/movies/{id}`` and ``/movies/{movie.id}`` as the same template and
    forbids them as two paths, so GET and PATCH of one resource share one path entry.
    """
    return variable.rsplit(".", 1)[-1]


def _openapi_path(binding: HttpBinding) -> str:
    path = binding.path
    for variable in binding.path_variables:
        path = path.replace(f"{{{variable}}}", f"{{{_parameter_name(variable)}}}")
    return path


def _parameters(binding: HttpBinding, schemas: _Schemas, index: _Index) -> list[JsonObject]:
    request = binding.method.input_type
    parameters: list[JsonObject] = []
    for variable in binding.path_variables:
        member = _field_at(request, variable)
        parameters.append(
            {
                "name": _parameter_name(variable),
                "in": "path",
                "required": True,
                "description": index.comment(member.full_name),
                "schema": schemas.value(member),
            }
        )
    if binding.body == "*":
        return parameters
    taken = {*binding.path_variables, binding.body} - {""}
    for query in _query_parameters(request, taken):
        parameter: JsonObject = {"name": query.name, "in": "query"}
        if query.required:
            parameter["required"] = True
        description = index.comment(query.member.full_name)
        if description:
            parameter["description"] = description
        value = schemas.value(query.member)
        parameter["schema"] = (
            {"type": "array", "items": value} if query.member.is_repeated else value
        )
        parameters.append(parameter)
    return parameters


def _request_body(binding: HttpBinding, schemas: _Schemas, index: _Index) -> JsonObject | None:
    request = binding.method.input_type
    patch = binding.verb == "PATCH"
    if binding.body == "*":
        bound = set(binding.path_variables)
        members = [member for member in request.fields if member.name not in bound]
        if not members:
            return None
        description = index.comment(request.full_name)
        if bound:
            # The path's fields are not in the body (the transcoder refuses both).
            # Described once, by the body itself.
            schema = schemas.fields(request, members, "", patch=patch)
        else:
            schema = schemas.message(request, patch=patch)
        required = not patch and any(_is_required(member) for member in members)
    elif binding.body:
        member = _field_at(request, binding.body)
        description = index.comment(member.full_name)
        if member.message_type is not None and not member.is_repeated:
            schema = schemas.message(member.message_type, patch=patch)
        else:
            schema = schemas.field(member)
        required = _is_required(member)
    else:
        return None
    body: JsonObject = {}
    if description:
        body["description"] = description
    body["required"] = required
    body["content"] = {"application/json": {"schema": schema}}
    return body


def _success(binding: HttpBinding, schemas: _Schemas, index: _Index) -> JsonObject:
    response = binding.method.output_type
    if binding.response_body:
        member = _field_at(response, binding.response_body)
        schema = schemas.field(member)
        description = index.comment(member.full_name)
    else:
        schema = schemas.message(response)
        description = index.comment(response.full_name)
        if response.full_name == "google.protobuf.Empty":
            description = "An empty JSON object: `{}`."
    return {
        "description": description or "OK",
        "content": {"application/json": {"schema": schema}},
    }


def _errors(binding: HttpBinding, public: bool) -> dict[str, JsonObject]:
    """The error statuses this route can answer, besides ``default`` (any other)."""
    full_name = binding.method.full_name
    errors: dict[str, JsonObject] = {
        "400": {"$ref": _RESPONSES + "BadRequest"},
        # Also on public routes: a token that is sent must be valid, and Login answers it
        # for a wrong email or password.
        "401": {"$ref": _RESPONSES + "Unauthorized"},
    }
    if not public:
        errors["403"] = {"$ref": _RESPONSES + "Forbidden"}
    if binding.path_variables:
        errors["404"] = {"$ref": _RESPONSES + "NotFound"}
    if full_name in CONFLICTS:
        errors["409"] = {
            "description": f"ALREADY_EXISTS (6): {CONFLICTS[full_name]}",
            "content": {"application/json": {"schema": {"$ref": _SCHEMAS + _STATUS}}},
        }
    if binding.body:
        errors["413"] = {"$ref": _RESPONSES + "PayloadTooLarge"}
    errors["429"] = {"$ref": _RESPONSES + "TooManyRequests"}
    errors["503"] = {"$ref": _RESPONSES + "ServiceUnavailable"}
    errors["504"] = {"$ref": _RESPONSES + "GatewayTimeout"}
    errors["default"] = {"$ref": _RESPONSES + "Error"}
    return errors


def _operation(
    binding: HttpBinding, operation_id: str, access: str, schemas: _Schemas, index: _Index
) -> JsonObject:
    public = access == _ACCESS_PUBLIC
    description = index.comment(binding.method.full_name)
    operation: JsonObject = {
        "tags": [binding.service.name],
        "operationId": operation_id,
        "summary": _summary(description) or binding.method.name,
        "description": description,
        "x-grpc-method": f"/{binding.service.full_name}/{binding.method.name}",
        "x-cinema-access": access,
    }
    parameters = _parameters(binding, schemas, index)
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(binding, schemas, index)
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = {"200": _success(binding, schemas, index), **_errors(binding, public)}
    # An empty list overrides any default: anyone may call a public route.
    operation["security"] = [] if public else [{"bearerAuth": []}]
    return operation


def _contract_files(pool: descriptor_pool.DescriptorPool, names: Iterable[str]) -> list[Any]:
    """The contract files with services: in the README's order, then any others by name."""
    known = [module.DESCRIPTOR.name for module in FILES]
    others = sorted(name for name in names if name.startswith("cinema/") and name not in known)
    files = [pool.FindFileByName(name) for name in [*known, *others] if name in names]
    return [file for file in files if file.services_by_name]


def document(descriptor_set: bytes, *, check_conflicts: bool = True) -> JsonObject:
    """The OpenAPI 3.1 document of every HTTP route in ``descriptor_set``.

    ``check_conflicts=False`` describes an older contract, whose RPCs :data:`CONFLICTS`
    need not all name.
    """
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    index = _index(files)
    schemas = _Schemas(index)
    try:
        access_names = pool.FindEnumTypeByName("cinema.v1.Access").values_by_number
    except KeyError:  # an old contract, from before access rules
        access_names = {}
    contract = _contract_files(pool, {file.name for file in files})
    routes = list(bindings_in(contract))

    methods = {binding.method.full_name for binding in routes}
    unknown = sorted(set(CONFLICTS) - methods)
    if unknown and check_conflicts:
        raise SystemExit(f"tools/openapi.py CONFLICTS names no HTTP-bound RPC: {unknown}")

    paths: dict[str, dict[str, JsonObject]] = {}
    seen: dict[str, int] = {}
    for binding in routes:
        base = f"{binding.service.name}_{binding.method.name}"
        seen[base] = seen.get(base, 0) + 1
        # additional_bindings of one RPC need distinct operation ids.
        operation_id = base if seen[base] == 1 else f"{base}_{seen[base]}"
        access = access_names[binding.access].name if binding.access in access_names else "?"
        verbs = paths.setdefault(_openapi_path(binding), {})
        verbs[binding.verb.lower()] = _operation(binding, operation_id, access, schemas, index)

    _status_schemas(schemas, pool)
    tags: dict[str, JsonObject] = {}
    for binding in routes:
        tag: JsonObject = {"name": binding.service.name}
        comment = index.comment(binding.service.full_name)
        if comment:
            tag["description"] = comment
        tags.setdefault(binding.service.name, tag)

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Cinema API",
            "version": "v1",
            "description": (
                "The JSON API of Cinema, a movie shop of gRPC services behind Envoy, whose"
                " gRPC-JSON transcoder serves these routes on the same port as native gRPC."
                " Bodies are proto3 JSON: lowerCamelCase names (requests accept the proto"
                " names too), 64-bit integers as strings, enums by name (replies spell the"
                " full name), timestamps in RFC 3339. Replies print fields without presence"
                " at their defaults (an empty list as `[]`) and leave out unset messages and"
                " `optional` fields. Errors are a `google.rpc.Status` as JSON with the"
                " matching HTTP status, from the services and from Envoy alike.\n\n"
                "Generated from `protos/` by `python tools/protogen.py`; do not edit."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": list(tags.values()),
        "paths": {
            path: {verb: verbs[verb] for verb in _METHOD_ORDER if verb in verbs}
            for path, verbs in sorted(paths.items())
        },
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": _error_responses(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The `accessToken` that `POST /api/v1/auth/login` answers.",
                }
            },
        },
    }


def render(openapi: JsonObject) -> str:
    """The document as committed: JSON, 2-space indent, trailing newline."""
    return json.dumps(openapi, indent=2, ensure_ascii=False) + "\n"


def removed_routes(old: JsonObject, new: JsonObject) -> list[str]:
    """``VERB path`` of every route in ``old`` that ``new`` no longer serves."""

    def routes(openapi: JsonObject) -> set[str]:
        return {
            f"{verb.upper()} {path}" for path, verbs in openapi["paths"].items() for verb in verbs
        }

    return sorted(routes(old) - routes(new))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/openapi.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--descriptors",
        type=pathlib.Path,
        default=DESCRIPTOR_SET,
        help="FileDescriptorSet with source info (default: gen/descriptors/cinema.binpb)",
    )
    parser.add_argument(
        "--against",
        type=pathlib.Path,
        help="an older descriptor set: fail when a route of it is gone, print nothing else",
    )
    args = parser.parse_args(argv)
    new = document(args.descriptors.read_bytes())
    if args.against is None:
        sys.stdout.write(render(new))
        return 0
    old = document(args.against.read_bytes(), check_conflicts=False)
    removed = removed_routes(old, new)
    for route in removed:
        print(f"JSON route removed: {route}", file=sys.stderr)
    return 1 if removed else 0


if __name__ == "__main__":
    sys.exit(main())
