"""Three real uvicorn nodes on loopback ports sharing PostgreSQL: routing, relays, failover.

Every test here can fail: processes are killed with SIGKILL, paused with SIGSTOP, restarted
with SIGTERM under load; afterwards every acknowledged write is checked in the database and
the history of answers is checked for linearizability (an answer never repeats and never goes
back in real-time order).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx2
import pytest
import websockets
from websockets.asyncio.client import connect

from fastapi_objects.storage import Storage, open_storage
from tests._nodes import Cluster
from tests._support import wait_until

pytestmark = pytest.mark.postgres
TTL = 2.0


@dataclass
class Answer:
    """One acknowledged increment: when it was sent, when it returned, what it said."""

    sent: float
    returned: float
    value: int
    node: str


def check_linearizable(answers: list[Answer]) -> None:
    """Values distinct; if A returned before B was sent, A's value is smaller."""
    values = [a.value for a in answers]
    assert len(values) == len(set(values)), "an acknowledged answer repeated"
    by_return = sorted(answers, key=lambda a: a.returned)
    latest_sent_order = sorted(answers, key=lambda a: a.sent)
    # For each answer B, every A that returned before B.sent must have a smaller value.
    i, best = 0, 0
    for b in latest_sent_order:
        while i < len(by_return) and by_return[i].returned < b.sent:
            best = max(best, by_return[i].value)
            i += 1
        assert b.value > best, f"{b} went back in time (an earlier answer was {best})"


@pytest.fixture
async def storage(pg_url: str, pg_schema: str) -> AsyncIterator[Storage]:
    store = open_storage(pg_url, schema=pg_schema)
    await store.create_tables()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def env(pg_url: str, pg_schema: str) -> dict[str, str]:
    return dict(os.environ, OBJECTS_DATABASE_URL=pg_url, OBJECTS_SCHEMA=pg_schema)


async def _attached(ws: websockets.asyncio.client.ClientConnection) -> str:
    frame = await asyncio.wait_for(ws.recv(), 10)
    assert '"objects:attached"' in str(frame), frame
    return str(frame)


async def test_any_node_reaches_the_one_owner_and_relays_websockets(
    env: dict[str, str], storage: Storage
) -> None:
    names = ["n1", "n2", "n3"]
    async with Cluster(env, names) as cluster:
        # HTTP from every node reaches one instance: the answers count up without a gap.
        values = [
            (await cluster.post(name, "/counters/live/increment")).json()["value"]
            for name in names * 3
        ]
        assert values == list(range(1, 10))
        owners = await storage.owners([("counter", "live")])
        owner = owners[("counter", "live")]
        # Two websocket clients through each node; all attach to the owner's instance.
        clients = []
        for name in names:
            for _ in range(2):
                ws = await connect(cluster[name].ws_url("/objects/counter/live/ws"))
                await _attached(ws)
                clients.append(ws)
        # A call from each client, and HTTP increments on every node: every client sees
        # every broadcast, in order.
        for i, ws in enumerate(clients):
            await ws.send(f'{{"ref": {i}, "call": "increment", "args": {{}}}}')
        for name in names * 2:
            assert (await cluster.post(name, "/counters/live/increment")).status_code == 200
        expected = list(range(10, 10 + len(clients) + 6))
        for ws in clients:
            seen, replies = [], 0
            while len(seen) < len(expected) or replies < 1:
                frame = await asyncio.wait_for(ws.recv(), 10)
                text = str(frame)
                if '"event":"changed"' in text:
                    seen.append(int(text.split('"value":')[1].split("}")[0]))
                elif '"ok":true' in text:
                    replies += 1
            assert seen == expected
        for ws in clients:
            await ws.close()
        stats = (await cluster.get(owner, "/api/stats")).json()
        assert stats, cluster.logs()
    cp = await storage.load("counter", "live")
    assert cp is not None and cp.state["value"] == expected[-1]


async def test_kill_9_of_the_owner_under_load(env: dict[str, str], storage: Storage) -> None:
    names = ["n1", "n2", "n3"]
    async with Cluster(env, names, ttl=TTL) as cluster:
        assert (await cluster.post("n1", "/counters/hot/increment")).json() == {"value": 1}
        owner = (await storage.owners([("counter", "hot")]))[("counter", "hot")]
        others = [n for n in names if n != owner]
        # A client attached through a node that is not the owner: relayed.
        relayed = await connect(cluster[others[0]].ws_url("/objects/counter/hot/ws"))
        await _attached(relayed)
        answers: list[Answer] = []
        failures: list[str] = []
        start = time.monotonic()
        killed_at: list[float] = []
        stop = asyncio.Event()

        async def caller(node: str) -> None:
            async with httpx2.AsyncClient(base_url=cluster[node].url, timeout=30) as http:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        response = await http.post("/counters/hot/increment")
                    except httpx2.TransportError as exc:
                        failures.append(f"{node}: {exc!r}")
                        continue
                    if response.status_code == 200:
                        answers.append(Answer(sent, time.monotonic(),
                                              response.json()["value"], node))
                    else:
                        failures.append(f"{node}: {response.status_code} {response.text}")

        callers = [asyncio.create_task(caller(n)) for n in others for _ in range(4)]
        # Calls answered before the kill (a loaded machine may take more than a second to
        # answer the first forwarded ones).
        await wait_until(lambda: len(answers) >= 20, within=60, what="answers before the kill")
        cluster[owner].signal(signal.SIGKILL)
        killed_at.append(time.monotonic())
        closed = None
        try:
            await asyncio.wait_for(relayed.recv(), TTL + 10)
            while True:
                await asyncio.wait_for(relayed.recv(), TTL + 10)
        except websockets.ConnectionClosed as exc:
            closed = exc
        await asyncio.sleep(TTL + 2.0)
        stop.set()
        await asyncio.gather(*callers)
    assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1012
    assert answers, failures[:5]
    check_linearizable(answers)
    before = [a for a in answers if a.returned < killed_at[0]]
    after = [a for a in answers if a.sent > killed_at[0]]
    assert before and after, (len(before), len(after), failures[:5])
    gap = min(a.returned for a in after) - killed_at[0]
    print(f"failover gap after kill -9: {gap:.2f}s (node_ttl {TTL}s), "
          f"{len(answers)} answered, {len(failures)} failed")
    assert gap <= TTL + 3.0, f"failover took {gap:.2f}s"
    # Failed calls are those in flight at the kill: their outcome was unknown and said so.
    assert all("outcome_unknown" in f or "forward_failed" in f for f in failures), failures[:5]
    cp = await storage.load("counter", "hot")
    assert cp is not None
    acked = max(a.value for a in answers)
    assert acked <= cp.state["value"] <= acked + len(failures) + 1
    assert start < killed_at[0]


async def test_sigstop_the_owner_past_its_ttl(env: dict[str, str], storage: Storage) -> None:
    names = ["n1", "n2"]
    async with Cluster(env, names, ttl=TTL) as cluster:
        first = await cluster.post("n1", "/counters/frozen/increment")
        assert first.json() == {"value": 1}
        owner = (await storage.owners([("counter", "frozen")]))[("counter", "frozen")]
        other = "n2" if owner == "n1" else "n1"
        answers = [Answer(0.0, time.monotonic(), 1, owner)]
        unknown = 0
        cluster[owner].signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            # The other node takes over once the frozen owner's heartbeat is TTL old. A call
            # forwarded to the frozen owner before that has an unknown outcome, and says so.
            while len(answers) < 6:
                sent = time.monotonic()
                response = await cluster.post(other, "/counters/frozen/increment")
                if response.status_code == 502:
                    assert response.json()["error"]["type"] == "outcome_unknown", response.text
                    unknown += 1
                    assert unknown <= 2, response.text
                    continue
                assert response.status_code == 200, response.text
                answers.append(Answer(sent, time.monotonic(), response.json()["value"], other))
            took_over = answers[1].returned - frozen_at
            await asyncio.sleep(TTL)  # frozen well past its TTL
        finally:
            cluster[owner].signal(signal.SIGCONT)
        print(f"takeover from a frozen owner: {took_over:.2f}s (node_ttl {TTL}s)")
        assert took_over <= 2 * TTL + 1.0
        # Woken up, the old owner answers nothing from its stale instance.
        for name in (owner, other, owner):
            sent = time.monotonic()
            response = await cluster.post(name, "/counters/frozen/increment")
            assert response.status_code == 200, response.text
            answers.append(Answer(sent, time.monotonic(), response.json()["value"], name))
            read = await cluster.get(name, "/counters/frozen")
            assert read.json()["value"] >= answers[-1].value
    check_linearizable(answers)
    cp = await storage.load("counter", "frozen")
    assert cp is not None and len(answers) <= cp.state["value"] <= len(answers) + unknown


async def test_rolling_restart_fails_no_call(env: dict[str, str], storage: Storage) -> None:
    names = ["n1", "n2", "n3"]
    keys = [f"r{i}" for i in range(8)]
    async with Cluster(env, names) as cluster:
        answers: dict[str, list[int]] = {k: [] for k in keys}
        failures: list[str] = []
        unanswered: list[str] = []
        restarting: set[str] = set()
        stop = asyncio.Event()

        async def caller(seed: int) -> None:
            i = seed
            async with httpx2.AsyncClient(timeout=60) as http:
                while not stop.is_set():
                    i += 1
                    key = keys[i % len(keys)]
                    live = [n for n in names if n not in restarting]
                    node = cluster[live[i % len(live)]]
                    try:
                        response = await http.post(f"{node.url}/counters/{key}/increment")
                    except httpx2.ConnectError:
                        continue  # a proxy in front would pick another node: nothing was sent
                    except (httpx2.RemoteProtocolError, httpx2.ReadError):
                        # The node closed this kept-alive connection as it began to stop
                        # (uvicorn closes idle ones at once) while the request was on its way:
                        # no response, and it never ran (the sums below prove it). Browsers
                        # resend such a request; this client sends its next one.
                        unanswered.append(node.name)
                        continue
                    if response.status_code == 200:
                        answers[key].append(response.json()["value"])
                    else:
                        failures.append(f"{node.name}: {response.status_code} {response.text}")

        callers = [asyncio.create_task(caller(s)) for s in range(8)]
        await asyncio.sleep(0.5)
        for name in names:
            restarting.add(name)
            await cluster[name].stop()
            await cluster[name].start()
            restarting.discard(name)
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*callers)
        logs = {name: cluster[name].stderr()[-8000:] for name in names} if failures else {}
    assert not failures, (failures[:5], logs)  # the nodes' logs say what the errors hide
    for key in keys:  # every increment that ran was answered: none of the unanswered ran
        cp = await storage.load("counter", key)
        assert cp is not None
        assert sorted(answers[key]) == list(range(1, cp.state["value"] + 1)), (key, unanswered)


async def test_fly_replay_sends_requests_and_upgrades_to_the_owner(
    env: dict[str, str], storage: Storage
) -> None:
    from tests._fly_proxy import FlyProxy
    from tests._server import LiveServer

    names = ["n1", "n2", "n3"]
    env = dict(env, OBJECTS_FLY_REPLAY="1")
    async with Cluster(env, names, ttl=1.5) as cluster:
        await asyncio.sleep(1.0)  # every node has read the others' machines (one heartbeat)
        proxy = FlyProxy({f"m-{n}": cluster[n].url for n in names})
        async with LiveServer(proxy) as front, httpx2.AsyncClient(base_url=front.url) as http:
            values = [(await http.post("/counters/fly/increment")).json()["value"]
                      for _ in range(12)]
            assert values == list(range(1, 13))
            assert proxy.replays >= 6  # two of every three requests landed elsewhere
            clients = [await connect(front.ws_url("/objects/counter/fly/ws")) for _ in range(3)]
            for i, ws in enumerate(clients):
                await _attached(ws)
                await ws.send(f'{{"ref": {i}, "call": "increment", "args": {{}}}}')
            for ws in clients:
                frames = [str(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4)]
                assert sum('"event":"changed"' in f for f in frames) == 3, frames
                await ws.close()
            assert proxy.replays >= 8  # websocket upgrades were replayed too
            stats = [(await cluster.get(n, "/api/stats")).json() for n in names]
        await proxy.http.aclose()
    # The proxy did the routing: a machine forwards only the first call for an object it has
    # not seen (the claim tells it the owner); after that it answers fly-replay.
    assert sum(s["forwarded"] for s in stats) <= len(names) - 1, stats
    assert sum(s["relayed"] for s in stats) == 0, stats
    cp = await storage.load("counter", "fly")
    assert cp is not None and cp.state["value"] == 15
