"""Every JSON route of the API, read once from the contracts' ``google.api.http`` options.

The gateway config (405 routes), the README's route table (``tools/routes.py``) and the
OpenAPI document all list the same bindings; they take them from :func:`bindings`, so what
Envoy serves, what the README says and what the explorer shows cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2

from cinema.v1 import access_pb2, cast_pb2, movie_pb2, order_pb2, user_pb2

#: The contract files that carry services, in the order the README and the docs list them.
FILES = (movie_pb2, cast_pb2, user_pb2, order_pb2)
_VERBS = ("get", "put", "post", "delete", "patch")
#: ``{id}`` or ``{movie.id}``, or with a sub-pattern ``{name=movies/*}``.
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


@dataclass(frozen=True)
class HttpBinding:
    """One ``google.api.http`` rule of one RPC."""

    service: descriptor.ServiceDescriptor
    method: descriptor.MethodDescriptor
    #: Upper case: ``GET``, ``POST``, ...
    verb: str
    #: The path template, e.g. ``/api/v1/orders/{id}:pay``.
    path: str
    #: ``""`` (no body), ``"*"`` (the request's fields) or the request field the body fills.
    body: str
    #: ``""`` (the whole response) or the response field that is the body.
    response_body: str
    #: The ``(cinema.v1.access)`` rule of the RPC.
    access: access_pb2.Access.ValueType

    @property
    def path_variables(self) -> tuple[str, ...]:
        """The request fields bound in the path, e.g. ``("id",)``."""
        return tuple(match.group(1) for match in _VARIABLE.finditer(self.path))

    @property
    def path_regex(self) -> str:
        """A RE2 regex matching exactly the paths this template binds (without query)."""
        parts = _VARIABLE.split(self.path)
        # split() alternates literal text and captured variable names.
        literals = parts[::2]
        return "^" + "[^/:]+".join(re.escape(literal) for literal in literals) + "$"


def _rules(options: descriptor_pb2.MethodOptions) -> Iterator[http_pb2.HttpRule]:
    if not options.HasExtension(annotations_pb2.http):
        return
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    yield rule
    yield from rule.additional_bindings


def bindings() -> Iterator[HttpBinding]:
    """Every HTTP binding of every Cinema RPC, in contract order."""
    return bindings_in(module.DESCRIPTOR for module in FILES)


def methods_by_path() -> dict[str, tuple[str, ...]]:
    """Each path template's regex -> the HTTP methods bound to it, in binding order."""
    found: dict[str, list[str]] = {}
    for binding in bindings():
        verbs = found.setdefault(binding.path_regex, [])
        if binding.verb not in verbs:
            verbs.append(binding.verb)
    return {regex: tuple(verbs) for regex, verbs in found.items()}


def bindings_in(files: Iterable[descriptor.FileDescriptor]) -> Iterator[HttpBinding]:
    """Every HTTP binding of every RPC in ``files``, in file order.

    :func:`bindings` reads the imported ``cinema.v1`` modules; this reads any descriptors,
    so the codegen can describe the descriptor set it has just built from ``protos/``
    before the Python modules of the running process catch up with it.
    """
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                access = options.Extensions[access_pb2.access]
                for rule in _rules(options):
                    verb = rule.WhichOneof("pattern")
                    if verb not in _VERBS:
                        continue
                    yield HttpBinding(
                        service=service,
                        method=method,
                        verb=verb.upper(),
                        path=getattr(rule, verb),
                        body=rule.body,
                        response_body=rule.response_body,
                        access=access,
                    )
