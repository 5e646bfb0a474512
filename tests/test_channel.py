"""The call channel between nodes: what a caller learns when its peer stops or vanishes.

The rule under test: a forwarded call is sent again elsewhere only when it cannot have run.
A leaving listener answers every call it started, answers later ones "moved", and closes with
``LEAVING``; a call still unanswered then did not run (``Moved``). Any other end of the
channel leaves the outcome unknown (``OutcomeUnknown``), never a silent retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from fastapi_objects._exceptions import InvalidArguments, OutcomeUnknown
from fastapi_objects.cluster import Forwarder, Listener, Moved, Signer
from fastapi_objects.cluster.channel import LEAVING, MAX_FRAME
from tests._support import wait_until

SECRET = b"s"


class Slow:
    """A call handler whose ``slow`` calls wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.ran: list[str] = []

    async def __call__(
        self, type: str, key: str, method: str, args: dict[str, Any], trace: Any = None
    ) -> Any:
        self.ran.append(key)
        if method == "slow":
            await self.release.wait()
        if method == "big":
            return "z" * (MAX_FRAME + 10)  # a reply larger than any call may be
        return key


@pytest.fixture
async def forwarder() -> AsyncIterator[Forwarder]:
    f = Forwarder(Signer(SECRET, "caller"), timeout=10)
    yield f
    await f.close()


async def test_a_leaving_listener_answers_what_it_started_and_refuses_the_rest(
    forwarder: Forwarder,
) -> None:
    handler = Slow()
    listener = Listener("127.0.0.1", 0, Signer(SECRET, "owner"), handler)
    address = await listener.start()
    started = asyncio.create_task(forwarder.call(address, "owner", "t", "first", "slow", {}))
    await wait_until(lambda: handler.ran == ["first"], what="the slow call to start")
    stopping = asyncio.create_task(listener.stop())
    await asyncio.sleep(0.05)  # the listener now waits for "first" before closing the channel
    with pytest.raises(Moved):
        await forwarder.call(address, "owner", "t", "late", "fast", {})
    handler.release.set()
    assert await started == "first"  # answered before the channel closed
    await stopping
    assert handler.ran == ["first"]  # "late" never ran
    with pytest.raises(Moved):  # the listener is gone: the connection is refused
        await forwarder.call(address, "owner", "t", "after", "fast", {})


async def _peer(on_call: Any) -> AsyncIterator[str]:
    async def handler(connection: ServerConnection) -> None:
        async for _ in connection:
            await on_call(connection)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}"


async def test_unanswered_calls_at_a_leaving_close_did_not_run(forwarder: Forwarder) -> None:
    async def leave(connection: ServerConnection) -> None:
        await connection.close(LEAVING, "node leaving")

    async for address in _peer(leave):
        with pytest.raises(Moved):
            await forwarder.call(address, "owner", "t", "k", "m", {})


@pytest.mark.parametrize("how", ["error close", "dropped connection"])
async def test_unanswered_calls_at_any_other_end_have_an_unknown_outcome(
    forwarder: Forwarder, how: str
) -> None:
    async def end(connection: ServerConnection) -> None:
        if how == "error close":
            await connection.close(1011, "internal error")
        else:
            connection.transport.abort()

    async for address in _peer(end):
        with pytest.raises(OutcomeUnknown, match="may or may not have run"):
            await forwarder.call(address, "owner", "t", "k", "m", {})


async def test_an_oversized_call_is_refused_and_the_channel_keeps_working(
    forwarder: Forwarder,
) -> None:
    """A call too large for the owner's listener is refused before it is sent; calls of
    other callers on the same channel are not cut off, and big replies come back whole."""
    handler = Slow()
    listener = Listener("127.0.0.1", 0, Signer(SECRET, "owner"), handler)
    address = await listener.start()
    try:
        assert await forwarder.call(address, "owner", "t", "a", "fast", {}) == "a"
        with pytest.raises(InvalidArguments, match="at most"):
            await forwarder.call(address, "owner", "t", "b", "fast", {"x": "y" * MAX_FRAME})
        assert len(await forwarder.call(address, "owner", "t", "c", "big", {})) > MAX_FRAME
        assert handler.ran == ["a", "c"]
    finally:
        await listener.stop()


async def test_a_call_still_running_when_leaving_runs_out_of_time_is_unknown(
    forwarder: Forwarder,
) -> None:
    """A leaving channel waits a bounded time for the calls it started; one still running
    then is not claimed to be "not run": its caller learns the outcome is unknown."""
    handler = Slow()
    listener = Listener("127.0.0.1", 0, Signer(SECRET, "owner"), handler)
    address = await listener.start()
    try:
        stuck = asyncio.create_task(forwarder.call(address, "owner", "t", "stuck", "slow", {}))
        await wait_until(lambda: handler.ran == ["stuck"], what="the slow call to start")
        (channel,) = listener._channels
        await channel.leave(within=0.1)
        with pytest.raises(OutcomeUnknown):
            await stuck
    finally:
        handler.release.set()
        await listener.stop()


async def test_a_call_to_an_address_another_node_took_over_is_moved(
    forwarder: Forwarder,
) -> None:
    """The owner remembered at an address stopped and another node listens there now: the
    call is refused before anything runs (421), so it is looked up again, not failed."""
    handler = Slow()
    listener = Listener("127.0.0.1", 0, Signer(SECRET, "newcomer"), handler)
    address = await listener.start()
    try:
        with pytest.raises(Moved):
            await forwarder.call(address, "departed", "t", "k", "fast", {})
        assert handler.ran == []
        assert await forwarder.call(address, "newcomer", "t", "k", "fast", {}) == "k"
    finally:
        await listener.stop()
