"""Hypothesis strategies for any request message, built from its descriptor.

Nothing here knows a Cinema message by hand: every field of every request of every RPC
gets values from its type (strings with NULs and odd unicode, the extremes of each integer
width, enum numbers nobody declared, repeated fields from empty to past every batch limit,
nested messages, field masks), so a field added to a proto is fuzzed the day it lands.

Blind values rarely get past a service's first check, though: a random string is never a
movie id. So a few names are recognised for what they are (ids, page tokens, currency
codes, emails, payment tokens, update masks) and draw from the real ones of the running
fleet (:class:`Seeds`) as often as from noise, to reach the code behind the first check.
"""

from __future__ import annotations

import base64
import json
import string
from dataclasses import dataclass
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor, message, message_factory
from hypothesis import strategies as st

from services.common.ids import new_id

Field = descriptor.FieldDescriptor
Strategy = st.SearchStrategy[Any]

# Nested messages deeper than this are left empty: no Cinema request nests further, and
# a recursive message would otherwise make an infinite strategy.
MAX_DEPTH = 4
_INT_RANGES = {
    Field.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    Field.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    Field.CPPTYPE_UINT32: (0, 2**32 - 1),
    Field.CPPTYPE_UINT64: (0, 2**64 - 1),
}

# Text that has broken services elsewhere: NULs and control characters, bidi overrides, a
# BOM, combining marks, the last code point, SQL and format-string metacharacters, numbers
# as text, whitespace of every kind, and strings long enough to pass any column width.
# Never a lone surrogate: a protobuf string is UTF-8, so a client cannot send one.
ODD_TEXT = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\n\r\x0b\x0c",
    "\u00a0\u2028\u2029\u3000",
    "\u202eevil",
    "\ufeff",
    "e\u0301\u0301\u0301",
    "\U0010ffff",
    "\U0001f3ac",
    "'; DROP TABLE movies; --",
    '"\\',
    "%s%n%x",
    "{0}",
    "../../etc/passwd",
    "NaN",
    "-1",
    "9" * 400,
    "A" * 300,
    "\u00e9" * 2_000,
    "x" * 10_000,
)
_TEXT = st.one_of(
    st.sampled_from(ODD_TEXT),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(string.printable, max_size=40),
)


@dataclass(frozen=True)
class Seeds:
    """Real values from the running fleet, so fuzzed requests can name what exists."""

    ids: dict[str, tuple[str, ...]]  # by kind of resource: "movie", "cast", "user", "order"
    page_tokens: tuple[str, ...]
    emails: tuple[str, ...]
    password: str

    def ids_for(self, field: Field, parent: descriptor.Descriptor) -> tuple[str, ...]:
        """The real ids a field names: ``movie_id`` and ``cast_ids`` say their kind, an ``id``
        is of its message's kind (``GetMovieRequest``, ``Movie``). Any kind, failing both."""
        prefix = field.name.removesuffix("s").removesuffix("_id")
        for kind, ids in self.ids.items():
            if prefix == kind or (prefix == "id" and kind in parent.name.lower()):
                return ids
        return tuple(i for ids in self.ids.values() for i in ids)


def _wrap(payload: Any) -> str:
    """A page token around any JSON value, encoded the way Cinema's are."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _rekeyed(token: str, key: Any) -> str:
    """A real token with its last key replaced: its fingerprint still matches the list's
    filters, so the key is what the service sees (the rest of the payload kept as is)."""
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return _wrap({**payload, "k": key})


# Last keys a client could put in a token. Unlike a protobuf string, JSON carries lone
# surrogates (as \ud800 escapes), and a NUL is as easy: neither may reach a database.
_KEYS = st.one_of(
    st.sampled_from(["\ud800", "a\udfff", "a\x00b", "", "\u00e9", "z" * 10_000, "' OR 1=1 --"]),
    st.text(st.characters(), max_size=40),
    _TEXT,
)


def page_tokens(seeds: Seeds) -> Strategy:
    """Page tokens near the real ones: re-keyed, cut, padded, or wrapping odd JSON."""
    real = st.sampled_from(seeds.page_tokens) if seeds.page_tokens else st.nothing()
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | _KEYS,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
        max_leaves=6,
    )
    return st.one_of(
        real,
        st.tuples(real, _KEYS).map(lambda t: _rekeyed(*t)),
        st.tuples(real, json_values).map(lambda t: _rekeyed(*t)),
        st.tuples(real, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
        st.tuples(real, _TEXT).map(lambda t: t[0] + t[1]),
        st.fixed_dictionaries({"k": json_values, "f": json_values}).map(_wrap),
        json_values.map(_wrap),
        st.binary(max_size=100).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.just(_wrap([[[[[[[[[[]]]]]]]]]])),
        st.just(base64.urlsafe_b64encode(b"[" * 100_000).decode()),  # RecursionError
        st.just("W" * 1_000_000),
        _TEXT,
    )


# Text a person would type: what the plausible requests put in a required field.
_PLAIN = st.sampled_from(["Alien", "Am\u00e9lie", "Horror", "Sigourney Weaver"]) | st.text(
    string.ascii_letters + string.digits + " ", min_size=1, max_size=30
)
_CURRENCIES = ["USD", "EUR", "JPY", "usd", "US", "USDD", "XXX", "\u00a3\u00a3\u00a3"]
_PAYMENT_TOKENS = ["tok_visa", "tok_mastercard", "tok_chargeDeclined", "tok_expiredCard", "tok_"]


def _text_for(
    field: Field, parent: descriptor.Descriptor, seeds: Seeds, plausible: bool
) -> Strategy:
    """Strings for one field: noise, plus the real values its name says it holds; only the
    real and plain ones when ``plausible``."""
    name = field.name
    known = st.sampled_from((*seeds.ids_for(field, parent), new_id()))
    if name == "page_token":
        return st.sampled_from(("", *seeds.page_tokens)) if plausible else page_tokens(seeds)
    if name in ("id", "ids") or name.endswith(("_id", "_ids")):
        if plausible:
            return known
        # A real id, one cut or grown by a character, or noise.
        near = st.tuples(known, st.sampled_from(["", "x", "\x00", " ", "\u00e9"]))
        return st.one_of(known, known, near.map(lambda t: t[0][:-1] + t[1]), _TEXT)
    if name == "currency_code":
        return (
            st.sampled_from(_CURRENCIES[:3]) if plausible else st.sampled_from(_CURRENCIES) | _TEXT
        )
    if name == "email":
        local = st.text(string.ascii_letters + "._+-", min_size=1, max_size=70)
        made = st.tuples(local, _PLAIN if plausible else _TEXT).map(lambda t: f"{t[0]}@{t[1]}.test")
        return st.sampled_from(seeds.emails) | made | (st.nothing() if plausible else _TEXT)
    if name in ("password", "current_password"):
        plain = st.text(string.printable, min_size=8, max_size=80)
        return st.just(seeds.password) | plain | (st.nothing() if plausible else _TEXT)
    if name == "payment_token":
        return st.sampled_from(_PAYMENT_TOKENS) | (st.nothing() if plausible else _TEXT)
    return _PLAIN if plausible else _TEXT


def _mask_paths(parent: descriptor.Descriptor, plausible: bool) -> Strategy:
    """Field mask paths for a request: the fields of its resource, nested paths, junk."""
    names: list[str] = []
    for sibling in parent.fields:
        resource = sibling.message_type
        if resource is None or resource.full_name.startswith("google.protobuf."):
            continue
        names += [member.name for member in resource.fields]
    if plausible:
        return st.lists(st.sampled_from(names), max_size=3, unique=True) if names else st.just([])
    junk = ["*", "", ".", "update_mask", "price.amount_minor", "movie.title", "Title", "title "]
    return st.lists(st.sampled_from(names + junk) | _TEXT, max_size=6)


def _scalar(field: Field, parent: descriptor.Descriptor, seeds: Seeds, plausible: bool) -> Strategy:
    if field.type == Field.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.cpp_type == Field.CPPTYPE_STRING:
        return _text_for(field, parent, seeds, plausible)
    if field.cpp_type == Field.CPPTYPE_BOOL:
        return st.booleans()
    if field.cpp_type == Field.CPPTYPE_ENUM:
        assert field.enum_type is not None
        declared = st.sampled_from([value.number for value in field.enum_type.values])
        # Open enums (proto3) carry any int32: an unknown number must be refused, not crash.
        return declared if plausible else declared | st.integers(-(2**31), 2**31 - 1)
    if field.cpp_type in (Field.CPPTYPE_FLOAT, Field.CPPTYPE_DOUBLE):
        return st.floats(width=32 if field.cpp_type == Field.CPPTYPE_FLOAT else 64)
    low, high = _INT_RANGES[field.cpp_type]
    # The edges of the width are where sums and products overflow, in plausible requests too.
    edges = [v for v in (low, low + 1, -1, 0, 1, 2, 1000, high - 1, high) if low <= v <= high]
    if plausible:  # small counts, as a quantity or a page size is
        return st.integers(max(low, 0), 5) | st.sampled_from(edges)
    return st.sampled_from(edges) | st.integers(low, high)


def _repeated(element: Strategy, plausible: bool, at_least: int = 0) -> Strategy:
    """Lists from empty to a few, and now and then one value many times (past any batch
    limit: Cinema's are in the hundreds), which costs one draw however long it is."""
    if plausible:
        return st.lists(element, min_size=at_least, max_size=3)
    many = st.tuples(element, st.integers(50, 1_200)).map(lambda t: [t[0]] * t[1])
    return st.lists(element, max_size=5) | many


def _behaviors(field: Field) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _field(
    field: Field, parent: descriptor.Descriptor, seeds: Seeds, depth: int, plausible: bool
) -> Strategy:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key = _scalar(entry.fields_by_name["key"], entry, seeds, plausible)
        value = _field(entry.fields_by_name["value"], entry, seeds, depth + 1, plausible)
        return st.dictionaries(key, value, max_size=4)
    if entry is not None and entry.full_name == "google.protobuf.FieldMask":
        paths = _mask_paths(parent, plausible)
        return paths.map(lambda chosen: build_message(entry, {"paths": chosen}))
    if entry is not None:
        single = _message(entry, seeds, depth + 1, plausible)
    else:
        single = _scalar(field, parent, seeds, plausible)
    if not field.is_repeated:
        return single
    required = plausible and field_behavior_pb2.REQUIRED in _behaviors(field)
    return _repeated(single, plausible, at_least=1 if required else 0)


def build_message(type_: descriptor.Descriptor, values: dict[str, Any]) -> message.Message:
    """A message of ``type_`` with ``values`` (by field name) set, whatever their fields' kind."""
    built = message_factory.GetMessageClass(type_)()
    for name, value in values.items():
        field = type_.fields_by_name[name]
        target = getattr(built, name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, message.Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif entry is not None:
            target.CopyFrom(value)
            target.SetInParent()  # an empty message is still present: HasField says so
        else:
            setattr(built, name, value)
    return built


def _message(type_: descriptor.Descriptor, seeds: Seeds, depth: int, plausible: bool) -> Strategy:
    if depth > MAX_DEPTH:
        return st.just(build_message(type_, {}))
    if not plausible:
        fields = {f.name: _field(f, type_, seeds, depth, False) for f in type_.fields}
        values = st.fixed_dictionaries({}, optional=fields)
    else:
        # What a client that read the docs sends: every REQUIRED field, never an
        # OUTPUT_ONLY one, any of the others. Except the id: output-only in a resource, but
        # an Update names the resource by it.
        required: dict[str, Strategy] = {}
        optional: dict[str, Strategy] = {}
        for f in type_.fields:
            behaviors = _behaviors(f)
            if field_behavior_pb2.OUTPUT_ONLY in behaviors and f.name != "id":
                continue
            is_required = field_behavior_pb2.REQUIRED in behaviors or f.name == "id"
            chosen = required if is_required else optional
            chosen[f.name] = _field(f, type_, seeds, depth, True)
        values = st.fixed_dictionaries(required, optional=optional)
    return values.map(lambda chosen: build_message(type_, chosen))


def message_strategy(type_: descriptor.Descriptor, seeds: Seeds) -> Strategy:
    """Messages of ``type_``: half of them any subset of its fields with any values of their
    types, half plausible (required fields set, real ids), to get past the first checks."""
    return st.one_of(_message(type_, seeds, 0, False), _message(type_, seeds, 0, True))


def requests(method: descriptor.MethodDescriptor, seeds: Seeds) -> Strategy:
    """Request messages of ``method``."""
    return message_strategy(method.input_type, seeds)
