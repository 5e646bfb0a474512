"""Fuzzing the websocket frame parser with Hypothesis, on one real connection.

Random text, malformed JSON, JSON with NaN/Infinity and numbers past a double, wrong types in
every field, deep nesting, unknown methods and events. After each frame a sentinel call must
be answered: the connection stays usable, and every frame the server sent on the way parses
as strict JSON (what a browser's ``JSON.parse`` accepts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fastapi_objects import Connection, DurableObject, Objects, client_callable
from tests._support import strict_json

EXAMPLES = 300


class _State(BaseModel):
    total: float = 0.0


class Target(DurableObject[_State]):
    """Methods of several shapes for the fuzzer to call, right or wrong."""

    public = True

    @client_callable
    async def echo(self, value: Any = None) -> Any:
        return value

    @client_callable
    async def add(self, by: float) -> float:
        self.state.total += by
        return self.state.total

    @client_callable
    async def shout(self, event: str, payload: Any = None) -> None:
        self.broadcast(event, payload)

    @client_callable
    async def fail(self) -> None:
        raise RuntimeError("a bug")

    async def wipe(self) -> None:
        """For server code only: a client frame must never run it."""
        self.state.total = -1.0
        self.broadcast("wiped")

    async def on_message(self, conn: Connection, frame: dict[str, Any]) -> None:
        conn.send("heard", frame.get("payload"))


strict = strict_json


# -- strategies ------------------------------------------------------------------------------

_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, st.text(max_size=20))
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_methods = st.one_of(
    st.sampled_from(
        ["echo", "add", "shout", "fail", "wipe", "on_connect", "broadcast", "_state"]
    ),
    st.text(max_size=12),
    _json,
)
_events = st.one_of(st.sampled_from(["note", "objects:attached", "objects:x", ""]), _json)


@st.composite
def _shaped(draw: st.DrawFn) -> str:
    """A frame that looks like a call or an event, with anything in its fields."""
    frame: dict[str, Any] = {}
    if draw(st.booleans()):
        frame["ref"] = draw(_json)
    if draw(st.booleans()):
        frame["call"] = draw(_methods)
        if draw(st.booleans()):
            frame["args"] = draw(
                st.one_of(_json, st.fixed_dictionaries({}, optional={
                    "value": _json, "by": _json, "event": _events, "payload": _json,
                }))
            )
    else:
        frame["event"] = draw(_events)
        frame["payload"] = draw(_json)
    frame.update(draw(st.dictionaries(st.text(max_size=6), _json, max_size=2)))
    return json.dumps(frame)  # Python writes NaN and Infinity: not JSON, on purpose


@st.composite
def _huge_number(draw: st.DrawFn) -> str:
    exponent = draw(st.integers(min_value=300, max_value=100_000))
    sign = draw(st.sampled_from(["", "-"]))
    where = draw(st.sampled_from(["ref", "args"]))
    number = f"{sign}{draw(st.integers(1, 9))}.5e{exponent}"
    if where == "ref":
        return f'{{"ref": {number}, "call": "echo", "args": {{}}}}'
    return f'{{"ref": "h", "call": "add", "args": {{"by": {number}}}}}'


@st.composite
def _deep(draw: st.DrawFn) -> str:
    depth = draw(st.integers(min_value=1, max_value=3000))
    inner = "[" * depth + "]" * depth
    return f'{{"ref": "d", "call": "echo", "args": {{"value": {inner}}}}}'


_frames = st.one_of(
    st.text(max_size=60),
    st.text(alphabet='{}[]":,0123456789.eE-+ ntrufalsNIy', max_size=60),
    _json.map(lambda v: json.dumps(v)),
    _shaped(),
    _huge_number(),
    _deep(),
)


# -- the test --------------------------------------------------------------------------------


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    objects = Objects(objects=[Target], database_url=db_url)
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    with TestClient(app) as client:
        yield client


def test_no_frame_breaks_the_connection_or_gets_a_reply_that_is_not_json(
    client: TestClient,
) -> None:
    with client.websocket_connect("/objects/target/fuzz/ws") as ws:
        assert strict(ws.receive_text())["event"] == "objects:attached"
        sentinel = 0

        @settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(_frames)
        def one_frame(text: str) -> None:
            nonlocal sentinel
            sentinel += 1
            ws.send_text(text)
            ws.send_text(json.dumps({"ref": f"s{sentinel}", "call": "echo", "args": {"value": 1}}))
            while True:
                frame = strict(ws.receive_text())
                assert isinstance(frame, dict), frame
                assert frame.get("event") != "wiped", "a client ran a method not marked for it"
                if "ok" in frame:
                    assert frame["ok"] in (True, False), frame
                    if frame["ok"] is False:
                        error = frame["error"]
                        assert isinstance(error["type"], str) and error["type"], frame
                        assert isinstance(error["message"], str), frame
                if frame.get("ref") == f"s{sentinel}":
                    assert frame == {"ref": f"s{sentinel}", "ok": True, "result": 1}
                    return

        one_frame()
        ws.send_text('{"ref": "last", "call": "add", "args": {"by": 0}}')
        while (frame := strict(ws.receive_text())).get("ref") != "last":
            pass
        assert frame["ok"] is True and math.isfinite(frame["result"])
