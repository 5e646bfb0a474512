"""No input can make an object unreadable (issue 8, part 3), on every backend.

Seen: ``by=<a 4,300-digit integer>`` twice made a state Python cannot parse back; after the
object hibernated every call answered 500 ``corrupt_state``. Its siblings: ``inf``/``nan``
(not JSON), a NUL character (PostgreSQL's jsonb refuses it, failing the whole batch), lone
surrogates, and the same in journal entries and results. Each is refused with
``UnstorableValue`` and rolled back; the object stays readable across hibernation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_objects import DurableObject, Runtime, readonly
from fastapi_objects._exceptions import UnstorableValue
from tests._apps import make_app
from tests.conftest import Backend

BIG = int("9" * 4300)  # 4,300 digits: storable; twice it is 4,301 digits, which is not


class BoxState(BaseModel):
    number: int = 0
    ratio: float = 0.0
    text: str = ""
    extra: dict[str, Any] = {}
    ratios: dict[str, list[float]] = {}


class Box(DurableObject[BoxState]):
    async def add(self, by: int) -> int:
        self.state.number += by
        return self.state.number

    async def set_ratio(self, ratio: float) -> None:
        self.state.ratio = ratio

    async def set_text(self, text: str) -> None:
        self.state.text = text

    async def set_extra(self, extra: dict[str, Any]) -> None:
        self.state.extra = extra

    async def set_ratios(self, ratios: dict[str, list[float]]) -> None:
        self.state.ratios = ratios

    async def note(self, payload: Any) -> None:
        self.state.number += 1
        self.record("note", payload)

    async def echo(self, value: Any) -> Any:
        self.state.number += 1
        return value

    @readonly
    async def read(self) -> dict[str, Any]:
        return self.state.model_dump()


def _runtime(backend: Backend) -> Runtime:
    return Runtime(objects=[Box], database_url=backend.url, schema=backend.schema,
                   create_tables=True)


BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("add", {"by": BIG}, "at most 4,300 digits"),  # the result is refused first
    ("set_ratio", {"ratio": float("inf")}, "Infinity and NaN"),
    ("set_ratio", {"ratio": float("nan")}, "Infinity and NaN"),
    ("set_text", {"text": "a\x00b"}, "NUL"),
    ("set_ratios", {"ratios": {"deep": [1.0, float("-inf")]}}, "Infinity and NaN"),
    ("set_extra", {"extra": {"s": "\ud800"}}, "surrogate"),
    ("note", {"payload": {"n": float("nan")}}, "journal entry 'note'"),
    ("note", {"payload": "\x00"}, "journal entry 'note'"),
    ("echo", {"value": float("inf")}, "result"),
    ("echo", {"value": {"big": BIG * 10}}, "result"),
]


async def test_unstorable_turns_are_refused_and_rolled_back(backend: Backend) -> None:
    async with _runtime(backend) as rt:
        box = rt.get(Box, "b")
        assert await box.add(BIG) == BIG  # the largest storable integer is fine
        for method, args, words in BAD_CALLS:
            with pytest.raises(UnstorableValue, match=words):
                await rt.call(Box, "b", method, args)
        assert (await box.read())["number"] == BIG  # every bad turn was rolled back
        assert await box.add(-BIG) == 0
    # The object survives hibernation and thaw: it is still readable and still works.
    async with _runtime(backend) as rt:
        box = rt.get(Box, "b")
        assert (await box.read())["number"] == 0
        assert await box.add(2) == 2
        if backend.name != "memory":
            journal = await rt.journal(Box, "b")
            assert all(entry.kind != "note" for entry in journal)


@pytest.mark.postgres
async def test_a_refused_turn_never_reaches_the_batch(pg_url: str, pg_schema: str) -> None:
    # Before the check, a NUL in one object's state made PostgreSQL refuse the whole group
    # commit: every other object in the batch failed with it.
    backend = Backend("postgres", pg_url, pg_schema)
    async with _runtime(backend) as rt:
        results = await asyncio.gather(
            *(rt.call(Box, f"good{i}", "add", {"by": 1}) for i in range(20)),
            rt.call(Box, "bad", "set_text", {"text": "\x00"}),
            return_exceptions=True,
        )
    assert results[:20] == [1] * 20
    assert isinstance(results[20], UnstorableValue)


def test_http_twice_a_huge_number_is_a_422_and_the_object_stays_readable(db_url: str) -> None:
    digits = "9" * 4300
    app, _ = make_app(db_url)
    with TestClient(app) as client:
        first = client.post("/counters/big/increment", params={"by": digits})
        assert first.status_code == 200, first.text
        second = client.post("/counters/big/increment", params={"by": digits})
        assert second.status_code == 422, second.text
        assert second.json()["error"]["type"] == "unstorable_value"
    app, _ = make_app(db_url)  # a new process: thaw from storage
    with TestClient(app) as client:
        read = client.get("/counters/big")
        assert read.status_code == 200, read.text
        assert read.json() == {"value": int(digits)}
