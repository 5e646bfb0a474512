"""Fuzzing the call channel with Hypothesis: whatever an authenticated peer sends, the owner's
listener keeps answering and no object breaks.

A real node (``Runtime`` on SQLite, its uvicorn listener on loopback) and one signed channel
to it. Each example sends one frame: random bytes, malformed JSON, JSON values of every shape,
calls with wrong types in every field, unknown types and methods, huge numbers, bad keys.
Then a sentinel call must be answered with the right value; every reply on the way must be a
JSON object with a status the protocol knows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect

from fastapi_objects import DurableObject, Runtime
from fastapi_objects.cluster import Signer
from fastapi_objects.cluster.channel import CHANNEL_PATH

EXAMPLES = 200


class _State(BaseModel):
    total: float = 0.0


class Target(DurableObject[_State]):
    async def echo(self, value: Any = None) -> Any:
        return value

    async def add(self, by: float) -> float:
        self.state.total += by
        return self.state.total


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_field = _json | st.sampled_from(["target", "add", "echo", "k", "", "..", "a/b", "x" * 300])
_calls = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(min_value=-(10**20), max_value=10**20) | _json,
        "type": _field, "key": _field, "method": _field,
        "args": _json | st.fixed_dictionaries({}, optional={"by": _json, "value": _json}),
    },
)
_frames = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    _json.map(lambda v: json.dumps(v).encode()),
    _calls.map(lambda v: json.dumps(v).encode()),
    st.just(b'{"id": 1e999, "type": "target"}'),
    st.just(b'{"id": NaN}'),
    st.just(b'{"id": 5, "type": "target", "key": "k", "method": "add", "args": {"by": 1e999}}'),
)


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[ClientConnection]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    async with Runtime(objects=[Target], database_url=url, node_id="owner",
                       create_tables=True) as rt:
        address = rt._host.routing.node.address
        assert address is not None
        signer = Signer((await rt.storage.cluster_secret()).encode(), "peer")
        headers = signer.headers("GET", CHANNEL_PATH + "?", b"", "owner")
        ws_url = "ws" + address.removeprefix("http") + CHANNEL_PATH
        async with connect(ws_url, additional_headers=headers, max_size=None) as ws:
            yield ws


SENTINEL = -424242


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=_frames)
async def test_no_frame_breaks_the_channel_or_an_object(
    channel: ClientConnection, frame: bytes
) -> None:
    await channel.send(frame)
    call = {"id": SENTINEL, "type": "target", "key": "k", "method": "echo",
            "args": {"value": "still here"}}
    await channel.send(json.dumps(call))
    while True:
        reply = json.loads(await channel.recv())
        assert isinstance(reply, dict) and reply.get("status") in (200, 400, 421), reply
        if reply["status"] == 200:
            assert "ok" in reply, reply
            if not reply["ok"]:
                assert reply["error"]["type"] != "internal_error", reply
        if reply.get("id") == SENTINEL:
            assert reply == {"id": SENTINEL, "status": 200, "ok": True, "result": "still here"}
            return
