"""Text every service refuses, checked once for every request: NUL characters.

A NUL is valid UTF-8, so it decodes, but PostgreSQL cannot store it in a text column
(psycopg2 raises ValueError, which was an INTERNAL) while SQLite stores it: no name, email,
id or token of Cinema's has a use for one. The error interceptor walks each decoded request
and answers INVALID_ARGUMENT naming every such field (``movie.cast_ids[1]``) before any
handler runs. Invalid UTF-8 never gets this far: it fails to decode.
"""

from __future__ import annotations

from google.protobuf import descriptor, message

from services.common.errors import FieldViolation

_STRING = descriptor.FieldDescriptor.TYPE_STRING
_MESSAGE = descriptor.FieldDescriptor.TYPE_MESSAGE


def _repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def nul_violations(request: message.Message, prefix: str = "") -> list[FieldViolation]:
    """A violation for every string field of ``request`` (at any depth) holding a NUL."""
    found: list[FieldViolation] = []
    for field, value in request.ListFields():
        path = prefix + field.name
        if field.type == _STRING:
            values = list(value) if _repeated(field) else [value]
            for index, text in enumerate(values):
                if "\x00" in text:
                    where = f"{path}[{index}]" if _repeated(field) else path
                    found.append(FieldViolation(where, "must not contain NUL characters"))
        elif field.type == _MESSAGE:
            if _repeated(field):
                for index, item in enumerate(value):
                    found.extend(nul_violations(item, f"{path}[{index}]."))
            else:
                found.extend(nul_violations(value, f"{path}."))
    return found
