"""Object identity: type names and keys."""

from __future__ import annotations

import re

from .._exceptions import InvalidKey

MAX_KEY_LENGTH = 256
KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:@+=~-]+")
KEY_REGEX = r"^[A-Za-z0-9_.:@+=~-]*[A-Za-z0-9_:@+=~-][A-Za-z0-9_.:@+=~-]*$"
"""The key rule as a JSON Schema ``pattern`` (with ``minLength`` 1, ``maxLength`` 256).

It needs no lookahead, so every regex engine that reads OpenAPI (ECMA, RE2, Rust) can check it.
"""
TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid object key, else raise ``InvalidKey``.

    Keys are 1 to 256 characters from ``A-Z a-z 0-9 _ . : @ + = ~ -``, not only dots: safe
    in a URL path, a topic name and a log line without escaping. ``.`` and ``..`` are refused
    because clients, proxies and URL normalisation resolve them as path segments, so
    ``/counters/../increment`` would never reach the object.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidKey("object key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"object key is {len(key)} characters; the limit is {MAX_KEY_LENGTH}")
    if KEY_PATTERN.fullmatch(key) is None:
        bad = sorted({c for c in key if KEY_PATTERN.fullmatch(c) is None})
        raise InvalidKey(
            f"object key {key[:64]!r} has characters outside [A-Za-z0-9_.:@+=~-]: "
            + " ".join(repr(c) for c in bad[:8])
        )
    if key.strip(".") == "":
        raise InvalidKey(
            f"object key {key[:64]!r} is only dots: '.' and '..' are path segments in a URL"
        )
    return key


def validate_key_prefix(prefix: object) -> str:
    """Return ``prefix`` if keys may start with it, else raise ``InvalidKey``.

    The key rule, but a prefix may be only dots: ``"."`` is the start of ``".a"``.
    """
    if isinstance(prefix, str) and 0 < len(prefix) < MAX_KEY_LENGTH and not prefix.strip("."):
        return prefix
    return validate_key(prefix)


def snake_case(name: str) -> str:
    """``ChatRoom`` -> ``chat_room``; ``HTTPCache`` -> ``http_cache``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def validate_type_name(name: str) -> str:
    """Return ``name`` if it is a valid type name (snake_case, <= 64 chars), else raise."""
    if TYPE_PATTERN.fullmatch(name) is None:
        raise ValueError(
            f"object type name {name!r} must be snake_case ([a-z][a-z0-9_]*, at most 64 chars)"
        )
    return name
