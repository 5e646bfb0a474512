"""Helpers shared by the storage and runtime tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest


async def wait_until(check: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Poll ``check`` every few milliseconds; fail the test after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what or check}")
        await asyncio.sleep(0.005)
