"""Page tokens are client input: every string decodes to a safe key or INVALID_ARGUMENT.

Each test below is one kind of crafted token that once escaped ``decode_token`` as an
exception (an INTERNAL to the client) or came back as a key no repository can bind; the
property test at the end covers the rest of the space.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common import pagination
from services.common.errors import InvalidArgument
from services.common.ids import new_id

FILTERS = {"genre": "Drama"}
FINGERPRINT = pagination._fingerprint(FILTERS)
SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


def b64(raw: bytes) -> str:
    """``raw`` the way encode_token wraps its JSON: unpadded base64url."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_of(payload: Any) -> str:
    """A token around any JSON value, made outside encode_token (as a client could)."""
    return b64(json.dumps(payload).encode())


def assert_malformed(token: str, field: str = "page_token") -> None:
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_token(token, FILTERS, field=field)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        (field, "malformed page token")
    ]


def test_a_real_token_round_trips_its_key() -> None:
    key = new_id()
    token = pagination.encode_token(key, FILTERS)
    assert pagination.decode_token(token, FILTERS) == key
    assert pagination.decode_token("", FILTERS) is None


def test_a_token_made_for_other_filters_is_refused_as_such() -> None:
    token = pagination.encode_token(new_id(), FILTERS)
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_token(token, {"genre": "Horror"})
    assert caught.value.violations[0].description == "page token was made for other filters"


def test_the_violation_names_the_field_it_was_given() -> None:
    assert_malformed("%%%", field="request.page_token")


def test_the_longest_token_encode_token_makes_is_within_the_cap() -> None:
    longest = pagination.encode_token("k" * pagination.MAX_KEY_LENGTH, FILTERS)
    assert len(longest) <= pagination.MAX_TOKEN_LENGTH
    assert pagination.decode_token(longest, FILTERS) == "k" * pagination.MAX_KEY_LENGTH


@pytest.mark.parametrize(
    "length", [pagination.MAX_TOKEN_LENGTH + 1, 64 * 1024, 4 * 1024 * 1024], ids=str
)
def test_a_token_over_the_cap_is_refused_before_decoding(length: int) -> None:
    # Valid base64url of valid JSON, padded with spaces: only the length is wrong.
    padded = json.dumps({"k": "a", "f": FINGERPRINT}).encode().ljust(length, b" ")
    token = b64(padded)
    assert len(token) > pagination.MAX_TOKEN_LENGTH
    assert_malformed(token)


@pytest.mark.parametrize(
    "raw",
    [b"[" * 190 + b"]" * 190, b"[" * 384, b'{"k":' * 70, b"[" * 100_000 + b"]" * 100_000],
    ids=["closed-within-cap", "unclosed-within-cap", "objects-within-cap", "over-cap"],
)
def test_deeply_nested_json_is_malformed(raw: bytes) -> None:
    assert_malformed(b64(raw))


def test_a_recursion_error_from_the_parser_is_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nesting within the cap stays below the parser's limit, but a request may already be
    # deep in the stack when it parses: RecursionError is refused like any bad JSON.
    def too_deep(*args: object, **kwargs: object) -> object:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    monkeypatch.setattr(json, "loads", too_deep)
    assert_malformed(token_of({"k": "a", "f": FINGERPRINT}))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",  # not UTF-8 at all
        b'{"k": "\xed\xa0\x80", "f": "x"}',  # a surrogate encoded as UTF-8 (CESU-8)
        b'{"k": "\xc0\x80", "f": "x"}',  # an overlong NUL
        json.dumps({"k": "a", "f": FINGERPRINT}).encode("utf-16"),  # json.loads would guess it
        json.dumps({"k": "a", "f": FINGERPRINT}).encode("utf-32"),
    ],
    ids=["invalid", "cesu-8-surrogate", "overlong-nul", "utf-16", "utf-32"],
)
def test_bytes_that_are_not_utf_8_are_malformed(raw: bytes) -> None:
    assert_malformed(b64(raw))


@pytest.mark.parametrize(
    "payload",
    [[], ["a", FINGERPRINT], "a", 7, 1.5, None, True, {}],
    ids=["empty-list", "list", "string", "int", "float", "null", "bool", "empty-object"],
)
def test_json_that_is_not_a_token_object_is_malformed(payload: Any) -> None:
    assert_malformed(token_of(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"k": "a"},
        {"f": FINGERPRINT},
        {"k": "a", "f": FINGERPRINT, "x": 1},
        {"K": "a", "f": FINGERPRINT},
    ],
    ids=["no-fingerprint", "no-key", "extra-member", "wrong-name"],
)
def test_an_object_without_exactly_k_and_f_is_malformed(payload: dict[str, Any]) -> None:
    assert_malformed(token_of(payload))


@pytest.mark.parametrize(
    "key",
    [7, 10**300, -1, 1.0, None, True, ["a"], {"a": "b"}],
    ids=["int", "huge-int", "negative", "float", "null", "bool", "list", "object"],
)
def test_a_key_that_is_not_a_string_is_malformed(key: Any) -> None:
    assert_malformed(token_of({"k": key, "f": FINGERPRINT}))


@pytest.mark.parametrize(
    "raw",
    [b'{"k": 1e999999, "f": "x"}', b'{"k": NaN, "f": "x"}', b'{"k": -Infinity, "f": "x"}'],
    ids=["overflowing-float", "nan", "infinity"],
)
def test_json_number_extremes_are_malformed(raw: bytes) -> None:
    assert_malformed(b64(raw))


def test_digits_past_pythons_int_limit_are_malformed() -> None:
    # int() refuses more than 4300 digits; the length cap refuses them before that.
    assert_malformed(b64(b'{"k": ' + b"9" * 5000 + b', "f": "x"}'))


@pytest.mark.parametrize(
    "key",
    [
        "",
        "a" * (pagination.MAX_KEY_LENGTH + 1),
        "a\x00b",  # PostgreSQL cannot bind a NUL
        "\ud800",  # a lone surrogate: no driver can encode it
        "\udfff\ud800",
        "Amélie",  # non-ASCII: the two databases would order it differently
        "٣",  # a digit, but not an ASCII one
        "a b",
        "a'; DROP TABLE movies; --",
        "a\n",
    ],
    ids=[
        "empty",
        "too-long",
        "nul",
        "lone-surrogate",
        "reversed-surrogates",
        "non-ascii",
        "arabic-digit",
        "space",
        "quote",
        "newline",
    ],
)
def test_a_key_repositories_cannot_compare_safely_is_malformed(key: str) -> None:
    # json.dumps escapes a surrogate as \\ud800, which json.loads turns back into one.
    assert_malformed(token_of({"k": key, "f": FINGERPRINT}))


@pytest.mark.parametrize(
    "fingerprint",
    ["", "0" * 15, "0" * 17, "G" * 16, 0],
    ids=["empty", "short", "long", "hex", "int"],
)
def test_a_fingerprint_that_is_not_16_hex_digits_is_malformed(fingerprint: Any) -> None:
    assert_malformed(token_of({"k": "a", "f": fingerprint}))


@pytest.mark.parametrize(
    "token",
    [
        "%%%",
        "e30",  # {}
        "bm90IGpzb24",  # not json
        "a",  # one character more than a multiple of four
        "\x00",
        "eyJr\x00",
        "é",
        "\uff45\uff59\uff2a\uff52",  # fullwidth letters
        "\ud800",
        "eyJrIjoiYSJ9\n",
        " eyJrIjoiYSJ9",
        "eyJrIjoiYSJ9==",  # padding: encode_token never writes it
        "eyJr+/",  # standard base64's alphabet, not base64url's
    ],
    ids=[
        "percent",
        "empty-object",
        "not-json",
        "one-char",
        "nul",
        "nul-inside",
        "non-ascii",
        "fullwidth",
        "surrogate",
        "newline",
        "space",
        "padding",
        "std-alphabet",
    ],
)
def test_a_token_that_is_not_unpadded_base64url_is_malformed(token: str) -> None:
    assert_malformed(token)


def test_a_valid_looking_token_cut_short_is_malformed() -> None:
    token = pagination.encode_token(new_id(), FILTERS)
    for end in range(1, len(token)):
        assert_malformed(token[:end])


@pytest.mark.parametrize("key", ["", "a\x00", "\ud800", "é", "a" * 129])
def test_encode_token_refuses_a_key_decode_token_would_refuse(key: str) -> None:
    with pytest.raises(ValueError, match="page token key"):
        pagination.encode_token(key, FILTERS)


@dataclass(frozen=True)
class Item:
    id: str


def fetch_from(ids: list[str], seen: list[str | None]) -> Callable[[str | None, int], list[Item]]:
    def fetch(after: str | None, limit: int) -> list[Item]:
        seen.append(after)
        return [Item(i) for i in ids if after is None or i > after][:limit]

    return fetch


def test_keyset_page_walks_a_list_with_its_own_tokens() -> None:
    ids = sorted(new_id() for _ in range(5))
    seen: list[str | None] = []
    first = pagination.keyset_page(2, "", FILTERS, fetch_from(ids, seen))
    second = pagination.keyset_page(2, first.next_page_token, FILTERS, fetch_from(ids, seen))
    third = pagination.keyset_page(2, second.next_page_token, FILTERS, fetch_from(ids, seen))
    assert [item.id for page in (first, second, third) for item in page.items] == ids
    assert third.next_page_token == ""
    assert seen == [None, ids[1], ids[3]]


def test_keyset_page_never_fetches_with_a_malformed_token() -> None:
    seen: list[str | None] = []
    with pytest.raises(InvalidArgument):
        pagination.keyset_page(
            2, token_of({"k": "\ud800", "f": FINGERPRINT}), FILTERS, fetch_from([], seen)
        )
    assert seen == []


# Tokens near the valid ones are where a decoder goes wrong: arbitrary text, text in the
# token alphabet, base64url of arbitrary bytes, and base64url of arbitrary JSON (objects with
# "k" and "f" among them, any value in each).
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
TOKENS = st.one_of(
    st.text(),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="),
    st.binary().map(b64),
    _JSON.map(token_of),
    st.fixed_dictionaries({"k": _JSON, "f": st.just(FINGERPRINT) | _JSON}).map(token_of),
    st.fixed_dictionaries({"k": st.text(), "f": st.just(FINGERPRINT)}).map(token_of),
)


@settings(
    max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(TOKENS)
def test_any_text_decodes_to_a_safe_key_or_is_invalid_argument(token: str) -> None:
    key, refused = decode_outcome(token)
    if refused:
        assert refused == ["page_token"]
    elif token == "":
        assert key is None
    else:
        assert isinstance(key, str)
        assert SAFE_KEY.fullmatch(key)


def decode_outcome(token: str) -> tuple[str | None, list[str]]:
    """The key decode_token returns, or the fields of the InvalidArgument it raises.

    Anything else it raises fails the property test that calls this.
    """
    try:
        return pagination.decode_token(token, FILTERS), []
    except InvalidArgument as error:
        return None, [v.field for v in error.violations]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.from_regex(SAFE_KEY, fullmatch=True), st.dictionaries(st.text(), st.text(), max_size=3))
def test_every_key_encode_token_accepts_round_trips(key: str, filters: dict[str, str]) -> None:
    assert pagination.decode_token(pagination.encode_token(key, filters), filters) == key
