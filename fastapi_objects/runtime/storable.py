r"""The check that keeps every input from making an object unreadable.

A turn's new state, journal entries and result must survive the trip through storage and
back: strict JSON (no ``Infinity``/``NaN``), integers Python can parse again (at most 4,300
digits), no lone surrogates, and no NUL character (PostgreSQL's ``jsonb`` refuses
``\u0000``; one such row would fail the whole group-commit batch). A turn that fails the
check is rolled back with ``UnstorableValue`` before anything is committed or sent.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError, from_json, to_json

from .._exceptions import UnstorableValue

if TYPE_CHECKING:
    from .methods import MethodSpec

# An escaped NUL: "\u0000" preceded by an even number of backslashes (so not the text "\\u0000").
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_MAX_INT_BITS = 14_000  # ~4,214 decimal digits: below Python's 4,300-digit parsing limit
_PLAIN_LENGTH = 4_000  # a JSON text this short holds no integer over 4,300 digits
_PLAIN_NESTING = 200  # fewer brackets than this cannot nest past the parser's depth limit


def check_storable(value: Any, what: str) -> None:
    """Raise ``UnstorableValue`` naming ``what`` unless ``value`` round-trips through storage."""
    if not _plainly_storable(value):
        storable_json(value, what)


def strict_json(value: Any, what: str) -> str:
    """The strict JSON text of ``value`` (``JSON.parse`` in a browser accepts it).

    ``ValueError`` when it holds NaN or ±Infinity ("the {what} holds a non-finite number"), or
    anything that is not JSON-compatible.
    """
    data = to_json(value)
    # Non-finite floats come out as bare NaN/Infinity: only then look closer (a string that
    # merely contains the word comes out the same in "strings" mode).
    if (b"NaN" in data or b"Infinity" in data) and to_json(value, inf_nan_mode="strings") != data:
        raise ValueError(f"NaN and Infinity are not JSON: {what} holds a non-finite number")
    return data.decode()


def storable_json(value: Any, what: str) -> bytes:
    """``value`` as the JSON text storage keeps, or ``UnstorableValue`` naming ``what``.

    The text is encoded once and checked on the bytes; it is parsed again only when they
    could hold what does not read back: ``Infinity`` or ``NaN``, an integer too long for
    Python to parse, or nesting deeper than the parser takes.
    """
    try:
        text = to_json(value)
    except (ValueError, PydanticSerializationError) as exc:
        raise _unstorable(what, exc) from None
    if (
        len(text) > _PLAIN_LENGTH or b"Infinity" in text or b"NaN" in text
        or text.count(b"[") + text.count(b"{") >= _PLAIN_NESTING
    ):
        try:
            from_json(text, allow_inf_nan=False)
        except ValueError as exc:
            raise _unstorable(what, exc) from None
    if b"\\u0000" in text and _NUL.search(text) is not None:
        raise UnstorableValue(
            f"{what} contains a NUL character (\\u0000), which PostgreSQL cannot store in JSON; "
            "the turn was rolled back"
        )
    return text


def _unstorable(what: str, exc: Exception) -> UnstorableValue:
    return UnstorableValue(
        f"{what} cannot be stored as JSON and read back ({_reason(exc)}); "
        "the turn was rolled back"
    )


def _plainly_storable(value: Any) -> bool:
    """The common scalars, decided without encoding anything."""
    kind = type(value)
    if value is None or kind is bool:
        return True
    if kind is int:
        return bool(value.bit_length() < _MAX_INT_BITS)
    if kind is float:
        return math.isfinite(value)
    if kind is str and "\x00" not in value:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    return False


def _reason(exc: Exception) -> str:
    message = str(exc)
    if "number out of range" in message:
        return "a number is too large: integers may have at most 4,300 digits"
    if "expected value" in message or "invalid number" in message:
        return "Infinity and NaN are not JSON"
    if "surrogates not allowed" in message:
        return "a string holds a lone surrogate, which is not valid UTF-8"
    return message


def check_result(spec: MethodSpec, result: Any, topic: str) -> None:
    """Check that a method's result, encoded as callers receive it, is storable JSON."""
    if _plainly_storable(result) and type(result) is not float:
        return  # the common cases (a float may be encoded otherwise by its annotation)
    try:
        encoded = spec.encode_result(result)
    except PydanticSerializationError as exc:
        raise UnstorableValue(
            f"{topic}.{spec.name}() returned a value its return annotation cannot encode "
            f"({exc}); the turn was rolled back"
        ) from None
    check_storable(encoded, f"{topic}.{spec.name}()'s result")
