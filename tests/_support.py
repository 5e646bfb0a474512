"""Helpers shared by the storage and runtime tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest


async def wait_until(check: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Poll ``check`` every few milliseconds; fail the test after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what or check}")
        await asyncio.sleep(0.005)


def uninstall(monkeypatch: pytest.MonkeyPatch, package: str, *users: str) -> None:
    """Make ``package`` unimportable, as if it were not installed; ``users``: the modules
    that import it, so that importing them again fails as it would."""
    import sys

    for name in [n for n in sys.modules if n.partition(".")[0] == package]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)
    for name in users:
        monkeypatch.delitem(sys.modules, name, raising=False)


async def steal(storage: object, type: str, key: str, node_id: str) -> None:
    """Give ``(type, key)`` to ``node_id`` behind its owner's back, bumping the epoch.

    What the database does when the owner's heartbeat is older than ``node_ttl`` (a paused
    process, a partition) while the owner itself has not noticed yet: a TTL of 0 makes every
    other node count as dead for this one claim.
    """
    from fastapi_objects.storage import Storage

    assert isinstance(storage, Storage)
    claim = await storage.claim(type, key, node_id, 0.0)
    assert claim.granted, claim


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def strict_json(text: str) -> object:
    """Parse as a browser's ``JSON.parse`` does: no NaN/Infinity, numbers must fit a double."""
    import json
    import math

    value = json.loads(text, parse_constant=_not_json)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            assert math.isfinite(item), text
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


class Recorder:
    """A client transport as the websocket session is one, keeping every frame it is sent
    (decoded) and how it was closed: the attach path without HTTP."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
