"""Deleting objects in the API (issue 10): ``objects.delete`` and ``self.delete()`` remove
state, journal and alarms, fenced by ownership; the next call starts the object fresh."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, Runtime, readonly
from fastapi_objects.storage import Alarm
from tests.conftest import Backend


class NoteState(BaseModel):
    text: str = ""


class Note(DurableObject[NoteState]):
    async def write(self, text: str) -> str:
        self.state.text = text
        self.record("wrote", {"text": text})
        self.set_alarm("remind", delay=3600)
        return self.state.text

    async def burn(self) -> str:
        self.delete()
        return "burnt"

    @readonly
    async def read(self) -> str:
        return self.state.text

    async def on_alarm(self, alarm: Alarm) -> None:
        pass


def _rt(backend: Backend, **options: object) -> Runtime:
    return Runtime(objects=[Note], database_url=backend.url, schema=backend.schema,
                   create_tables=True, **options)  # type: ignore[arg-type]


async def _gone(rt: Runtime, key: str) -> None:
    assert await rt.storage.load("note", key) is None
    assert await rt.storage.read_journal("note", key) == []
    assert await rt.storage.load_alarms("note", key) == []


async def test_delete_from_outside_and_from_inside(backend: Backend) -> None:
    async with _rt(backend) as rt:
        await rt.get(Note, "a").write("secret")
        await rt.delete(Note, "a")
        await _gone(rt, "a")
        assert await rt.get(Note, "a").read() == ""  # fresh
        await rt.get(Note, "b").write("also secret")
        assert await rt.get(Note, "b").burn() == "burnt"
        await _gone(rt, "b")
        assert await rt.get(Note, "b").read() == ""
        await rt.delete(Note, "never")  # nothing to delete is fine
    async with _rt(backend) as rt:  # hibernated objects are deleted too
        if backend.name != "memory":
            await rt.get(Note, "c").write("x")
    if backend.name != "memory":
        async with _rt(backend) as rt:
            await rt.delete(Note, "c")
            await _gone(rt, "c")


async def test_delete_reaches_the_owner_on_another_node(sql_backend: Backend) -> None:
    async with _rt(sql_backend, node_id="a") as a, _rt(sql_backend, node_id="b") as b:
        await a.get(Note, "k").write("owned by a")
        await b.delete(Note, "k")  # forwarded to a, which holds it
        await _gone(b, "k")
        assert await b.get(Note, "k").read() == ""


async def test_delete_is_fenced_by_ownership(sql_backend: Backend) -> None:
    from tests._support import steal

    async with _rt(sql_backend, node_id="a") as a, _rt(sql_backend, node_id="b") as b:
        await a.get(Note, "k").write("v1")
        await steal(a.storage, "note", "k", b.node_id)  # a's instance is stale now
        from fastapi_objects import ConflictError

        with pytest.raises(ConflictError):
            await a.get(Note, "k").burn()
        assert (await b.storage.load("note", "k")) is not None  # nothing was deleted
