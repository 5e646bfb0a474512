"""JSON Patch (RFC 6902) for operator edits: checked, applied to a state, validated by its model.

An edit never trusts its patch: the operations are checked before anything runs (the shape
RFC 6902 gives each one, JSON Pointers that parse, storable values), then applied to the
state's JSON and the result validated by the state model. Every failure is an
``InvalidEdit`` (or ``UnstorableValue``) naming what is wrong; nothing changes.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer
import pydantic

from .._exceptions import InvalidEdit
from .methods import describe_errors
from .storable import storable_json

EDIT = "objects:edit"
"""The journal kind (and broadcast event) of an operator's edit: ``{"patch", "undo", "by"}``."""
RESTORE = "objects:restore"
"""The journal kind (and broadcast event) of a restore: ``{"rev", "patch", "undo", "by"}``."""
MAX_OPERATIONS = 1_000
"""The most operations one edit may carry."""

# Each operation's members besides "op", as RFC 6902 section 4 requires them.
_MEMBERS = {
    "add": ("path", "value"), "remove": ("path",), "replace": ("path", "value"),
    "move": ("from", "path"), "copy": ("from", "path"), "test": ("path", "value"),
}


def check_patch(patch: Any) -> list[dict[str, Any]]:
    """``patch`` as a list of RFC 6902 operations, or ``InvalidEdit`` saying what is wrong."""
    if not isinstance(patch, list):
        raise InvalidEdit(
            'a JSON Patch is a JSON array of operations, e.g. [{"op": "replace", '
            '"path": "/value", "value": 3}]'
        )
    if len(patch) > MAX_OPERATIONS:
        raise InvalidEdit(f"the patch has {len(patch)} operations; at most {MAX_OPERATIONS}")
    for index, operation in enumerate(patch):
        where = f"operation {index}"
        if not isinstance(operation, dict):
            raise InvalidEdit(f"{where} is not a JSON object")
        name = operation.get("op")
        if not isinstance(name, str) or name not in _MEMBERS:
            raise InvalidEdit(f"{where}: op must be one of {', '.join(_MEMBERS)}")
        for member in _MEMBERS[name]:
            if member not in operation:
                raise InvalidEdit(f"{where} ({name}) needs {member!r}")
            if member in ("path", "from"):
                _check_pointer(operation[member], f"{where}: {member}")
    storable_json(patch, "the patch")  # it is journaled: it must read back
    return patch


def _check_pointer(pointer: Any, where: str) -> None:
    if not isinstance(pointer, str):
        raise InvalidEdit(f"{where} must be a JSON Pointer string such as '/items/0'")
    try:
        jsonpointer.JsonPointer(pointer)
    except jsonpointer.JsonPointerException as exc:
        raise InvalidEdit(f"{where}: {pointer[:100]!r} is not a JSON Pointer ({exc})") from None


def apply_patch(
    model: type[pydantic.BaseModel], state: pydantic.BaseModel, patch: list[dict[str, Any]],
    topic: str,
) -> pydantic.BaseModel:
    """The state ``patch`` makes of ``state`` (its JSON), validated by ``model``."""
    try:
        document = jsonpatch.apply_patch(state.model_dump(mode="json"), patch)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise InvalidEdit(f"{topic}: the patch does not apply: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:  # a value jsonpatch chokes on
        raise InvalidEdit(f"{topic}: the patch does not apply: {exc!r}") from None
    return validated(model, document, topic)


def validated(model: type[pydantic.BaseModel], data: Any, topic: str) -> pydantic.BaseModel:
    """``data`` as an instance of ``model``, or ``InvalidEdit`` naming what breaks it."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = describe_errors(exc, "state", 5)
        raise InvalidEdit(
            f"{topic}: the edited state does not fit {model.__name__}: {problems}"
        ) from None


def diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """The JSON Patch that turns ``before`` into ``after`` (journaled to undo a change)."""
    operations: list[dict[str, Any]] = jsonpatch.make_patch(before, after).patch
    return operations
