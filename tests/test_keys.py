"""Object identity: key validation, snake_case type names, and what classes get by default."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fastapi_objects._exceptions import InvalidKey, ObjectsError
from fastapi_objects.runtime import DurableObject
from fastapi_objects.runtime.keys import (
    KEY_REGEX,
    MAX_KEY_LENGTH,
    snake_case,
    validate_key,
    validate_key_prefix,
    validate_type_name,
)


class _State(BaseModel):
    n: int = 0


@pytest.mark.parametrize(
    "key",
    [
        "a", "Z", "0", "abc123", "user:42", "user@example.com", "a.b", "a_b", "a-b", "a+b",
        "a=b", "a~b", "_", ":", "-leading-dash", "2024-01-01T10:00:00", "x" * MAX_KEY_LENGTH,
        "A-Za-z0-9_.:@+=~-", ".a", "a.", "..a", "a..b", "._.", "." * 255 + "x",
    ],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("x" * (MAX_KEY_LENGTH + 1), "257 characters; the limit is 256"),
        ("a/b", "'/'"),
        ("a b", "' '"),
        ("a\tb", "'\\t'"),
        ("line\n", "'\\n'"),  # a trailing newline must not slip past the pattern
        ("\n", "'\\n'"),
        ("a\x00b", "'\\x00'"),
        ("café", "'é'"),
        ("emoji😀", "'😀'"),
        ("../etc/passwd", "'/'"),
        ("a?b#c", "'#' '?'"),
        ("a%2Fb", "'%'"),
        ("quote'", "\"'\""),
        ("back\\slash", repr("\\")),
    ],
)
def test_invalid_keys_say_why(key: str, message: str) -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    assert message in str(info.value)
    assert info.value.type == "invalid_key"
    assert isinstance(info.value, ObjectsError)


@pytest.mark.parametrize("key", [".", "..", "...", "." * MAX_KEY_LENGTH])
def test_keys_made_only_of_dots_are_refused(key: str) -> None:
    # /counters/../increment is /increment to a browser, a proxy or httpx: never the object.
    with pytest.raises(InvalidKey, match="only dots"):
        validate_key(key)


def test_a_prefix_may_be_only_dots() -> None:
    assert validate_key_prefix(".") == "." and validate_key_prefix("..") == ".."
    assert validate_key_prefix("user:") == "user:"
    for bad in ("", "a/", "." * MAX_KEY_LENGTH, 5):
        with pytest.raises(InvalidKey):
            validate_key_prefix(bad)


def _allowed_by_schema(key: str) -> bool:
    # JSON Schema reads `pattern` as an ECMA regex searched in the value, plus the lengths.
    # Python's `$` also matches before a final newline, which ECMA's does not: fullmatch
    # without the anchors is the ECMA meaning.
    return (
        1 <= len(key) <= MAX_KEY_LENGTH
        and re.fullmatch(KEY_REGEX.removeprefix("^").removesuffix("$"), key) is not None
    )


def _valid(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True


_KEYS = st.text(alphabet=st.sampled_from("a.Z9_:-~/ \n%é"), max_size=12) | st.text(
    alphabet=".x", min_size=250, max_size=260
)


@given(_KEYS)
@settings(derandomize=True, database=None)  # the same examples on every run
def test_the_openapi_pattern_agrees_with_validate_key(key: str) -> None:
    assert _allowed_by_schema(key) == _valid(key)


@pytest.mark.parametrize("key", ["", ".", "..", "a/b", "a\n", "x" * 257, "a", "a.b", "..a"])
def test_the_openapi_pattern_on_the_edges(key: str) -> None:
    assert _allowed_by_schema(key) == _valid(key)


@pytest.mark.parametrize("key", [5, 5.0, None, b"abc", ["a"], ("a",), {"a": 1}, True])
def test_non_string_keys(key: Any) -> None:
    with pytest.raises(InvalidKey, match=f"must be a string, got {type(key).__name__}"):
        validate_key(key)


def test_invalid_key_message_is_bounded() -> None:
    key = "/" * 200  # 200 characters: under the length limit, every one of them invalid
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    assert len(str(info.value)) < 200


def test_bad_characters_are_listed_once_each() -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key("a b c/d/e")
    assert str(info.value).count("'/'") == 1 and str(info.value).count("' '") == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Counter", "counter"),
        ("ChatRoom", "chat_room"),
        ("HTTPCache", "http_cache"),
        ("MyHTTPServer", "my_http_server"),
        ("UserV2", "user_v2"),
        ("OAuth2Token", "o_auth2_token"),
        ("Room2D", "room2_d"),
        ("ABC", "abc"),
        ("A", "a"),
        ("already_snake", "already_snake"),
        ("camelCase", "camel_case"),
        ("IOBuffer", "io_buffer"),
        ("Cart", "cart"),
    ],
)
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected
    assert validate_type_name(expected) == expected


@pytest.mark.parametrize(
    "name", ["", "Counter", "9lives", "_private", "chat-room", "chat room", "a" * 65, "é"]
)
def test_invalid_type_names(name: str) -> None:
    with pytest.raises(ValueError, match="snake_case"):
        validate_type_name(name)


def test_longest_type_name() -> None:
    assert validate_type_name("a" * 64) == "a" * 64


def test_classes_get_snake_case_type_names() -> None:
    class ShoppingCart(DurableObject[_State]):
        async def add(self) -> int:
            return 1

    class Renamed(DurableObject[_State]):
        type_name = "cart_v2"

    assert ShoppingCart.type_name == "shopping_cart"
    assert Renamed.type_name == "cart_v2"


def test_subclass_does_not_inherit_an_overridden_type_name() -> None:
    class Base(DurableObject[_State]):
        type_name = "base_thing"

    class Derived(Base):
        pass

    assert Base.type_name == "base_thing"
    assert Derived.type_name == "derived"


def test_invalid_type_name_fails_at_class_definition() -> None:
    with pytest.raises(ValueError, match="snake_case"):

        class _Hidden(DurableObject[_State]):
            pass

    with pytest.raises(ValueError, match="snake_case"):

        class Bad(DurableObject[_State]):
            type_name = "Bad-Name"
