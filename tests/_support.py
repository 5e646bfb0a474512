"""Helpers shared by the storage and runtime tests (not fixtures of conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


@pytest.fixture(autouse=True)
def _probe_postgres_first(request: pytest.FixtureRequest) -> None:
    """Resolve the session-scoped ``pg_url`` outside the event loop.

    conftest's async ``backend`` fixture asks for ``pg_url`` lazily, and ``pg_url`` runs
    ``asyncio.run`` (which fails inside a running loop); resolving it here first caches it.
    """
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "postgres":
        request.getfixturevalue("pg_url")


async def wait_until(check: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Poll ``check`` every few milliseconds; fail the test after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what or check}")
        await asyncio.sleep(0.005)
