"""An object's state: its defaults, a checkpoint decoded (and migrated), its journal replayed."""

from __future__ import annotations

from typing import Any

import pydantic

from .._exceptions import CorruptState, InvalidEdit, ObjectNotFound
from ..storage import Checkpoint, JournalEntry, Storage
from .edits import EDIT, RESTORE, apply_patch
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
    return apply_entries(cls, topic, state, entries)


def apply_entries(
    cls: type[EventSourced[Any, Any]], topic: str, state: Any, entries: list[JournalEntry]
) -> tuple[Any, int]:
    """Apply journal entries to ``state``: events, and operators' edits and restores.

    An edit or restore of an event-sourced object is journaled with the patch it made, so
    replaying the journal makes the same state. Returns the state and the events applied.
    """
    applied = 0
    for entry in entries:
        if entry.kind in (EDIT, RESTORE):
            patch = entry.payload.get("patch") if isinstance(entry.payload, dict) else None
            try:
                state = apply_patch(cls.state_model, state, patch or [], topic)
            except InvalidEdit as exc:
                message = f"{topic}: journal entry rev {entry.rev}: {exc.message}"
                raise CorruptState(message) from None
            continue
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


async def read_state(
    storage: Storage, cls: type[DurableObject[Any]], key: str
) -> tuple[Checkpoint, Any] | None:
    """An object's stored checkpoint and its current state, without thawing it.

    The checkpoint's state, migrated; for an event-sourced object, plus the journal after its
    snapshot. ``None`` when the object was never committed.
    """
    cp = await storage.load(cls.type_name, key)
    if cp is None:
        return None
    topic = f"{cls.type_name}:{key}"
    state = decode_state(cls, topic, cp.state, cp.state_version)
    if issubclass(cls, EventSourced) and cp.journal_rev > cp.snapshot_rev:
        state, _ = await replay(storage, cls, key, state, after_rev=cp.snapshot_rev)
    return cp, state
