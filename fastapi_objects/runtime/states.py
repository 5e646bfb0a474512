"""An object's state: its defaults, a checkpoint decoded (and migrated), its journal replayed."""

from __future__ import annotations

from typing import Any

import pydantic

from .._exceptions import CorruptState, ObjectNotFound
from ..storage import Storage
from .object import DurableObject, EventSourced


def new_state(cls: type[DurableObject[Any]], topic: str) -> Any:
    """The state of an object never stored: its model's defaults."""
    try:
        return cls.state_model()
    except pydantic.ValidationError as exc:
        missing = [".".join(map(str, e["loc"])) for e in exc.errors(include_url=False)]
        raise ObjectNotFound(
            f"{topic} does not exist, and a new one cannot start from "
            f"{cls.state_model.__name__}() (no default for {', '.join(missing)})"
        ) from None


def decode_state(cls: type[DurableObject[Any]], topic: str, data: Any, version: int) -> Any:
    """Validate a checkpoint's state, upgrading it with ``migrate_state`` when it is older."""
    if version > cls.state_version:
        raise CorruptState(
            f"{topic}: stored state version {version} is newer than "
            f"{cls.__name__}.state_version={cls.state_version} (a newer deploy wrote it?)"
        )
    if not isinstance(data, dict):
        raise CorruptState(f"{topic}: stored state is {type(data).__name__}, not an object")
    if version < cls.state_version:
        try:
            data = cls.migrate_state(data, version)
        except Exception as exc:
            message = exc.message if isinstance(exc, CorruptState) else repr(exc)
            raise CorruptState(
                f"{topic}: migrating state from version {version} failed: {message}"
            ) from exc
    try:
        return cls.state_model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise CorruptState(
            f"{topic}: stored state (version {version}) does not fit "
            f"{cls.state_model.__name__}: {exc.errors(include_url=False)[:3]}"
        ) from None


async def replay(
    storage: Storage, cls: type[EventSourced[Any, Any]], key: str, state: Any, after_rev: int
) -> tuple[Any, int]:
    """Apply the journal's events after ``after_rev``; return the state and how many applied."""
    topic = f"{cls.type_name}:{key}"
    try:
        entries = await storage.read_journal(cls.type_name, key, after_rev=after_rev)
    except ValueError as exc:
        raise CorruptState(f"{topic}: a journal entry is not valid JSON ({exc})") from exc
    applied = 0
    for entry in entries:
        if entry.kind != "event":
            continue
        try:
            event = cls.event_adapter.validate_python(entry.payload)
        except pydantic.ValidationError as exc:
            raise CorruptState(
                f"{topic}: journal entry rev {entry.rev} is not a valid event: "
                f"{exc.errors(include_url=False)[:3]}"
            ) from None
        state = cls.apply(state, event)
        applied += 1
    return state, applied
