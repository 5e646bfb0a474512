"""Fuzzing edits with Hypothesis: whatever patch an operator sends, the answer is the new state
or a client error, and the object stays readable and serving.

A real ``Runtime`` on a SQLite file. Each example edits one object with a patch of any shape:
operations of every kind with pointers into the state or anywhere, values of every JSON type
(huge numbers, NUL characters, non-finite floats), and anything that is not a patch at all.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from fastapi_objects import InvalidEdit, Runtime, StaleRevision, UnstorableValue
from fastapi_objects.runtime import DurableObject

EXAMPLES = 200


class Shape(BaseModel):
    count: int = Field(default=0, ge=0)
    name: str = "x"
    items: list[int] = []
    extra: dict[str, Any] = {}


class Thing(DurableObject[Shape]):
    async def bump(self) -> int:
        self.state.count += 1
        return self.state.count


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**5000), max_value=10**5000)
    | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
_pointer = st.sampled_from([
    "", "/", "/count", "/name", "/items", "/items/0", "/items/-", "/items/9", "/extra",
    "/extra/a", "/extra/a/b", "/nope", "/count/x", "count", "/~2", "/items/01",
]) | st.text(max_size=12)
_operation = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]) | _json},
    optional={"path": _pointer | _json, "from": _pointer | _json, "value": _json},
)
_patches = st.lists(_operation, max_size=4) | _json


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    async with Runtime(objects=[Thing], database_url=url, create_tables=True) as runtime:
        await runtime.get(Thing, "t").bump()
        yield runtime


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patch=_patches, stale=st.booleans())
async def test_no_patch_breaks_an_object(rt: Runtime, patch: Any, stale: bool) -> None:
    stored = await rt.storage.load("thing", "t")
    assert stored is not None
    rev = stored.rev - 1 if stale else stored.rev
    try:
        done = await rt.edit(Thing, "t", patch, rev=max(rev, 1), by="fuzz")
    except (InvalidEdit, UnstorableValue, StaleRevision):
        after = await rt.storage.load("thing", "t")
        assert after is not None and after.rev == stored.rev  # nothing changed
    else:
        assert done["rev"] == stored.rev + 1
        assert Shape.model_validate(done["state"]).model_dump(mode="json") == done["state"]
    after = await rt.storage.load("thing", "t")
    assert after is not None
    Shape.model_validate(after.state)  # readable
    assert not _non_finite(after.state)
    assert await rt.get(Thing, "t").bump() == after.state["count"] + 1  # serving


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False
