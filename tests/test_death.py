"""Proven deaths: a node takes a crashed node's objects at once when it can prove it dead.

Real processes stand for the crashed nodes (started, SIGKILLed, reaped or left as zombies);
their rows are forged as the dead node registered them, on memory, SQLite and PostgreSQL.
What must never be taken early is pinned too: a live (or stopped) process, another PID
namespace (a container on the same host), another machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fastapi_objects.cluster import ClusterNode
from fastapi_objects.cluster.death import proof_of_death, this_process
from fastapi_objects.storage import NodeInfo, NodeProcess, Storage

LONG_TTL = 30.0  # a takeover within it was proven, not waited for
K = ("counter", "k")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat from the third (the state) on."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _start_time(pid: int) -> int:
    return int(_stat(pid)[22 - 3])


def _state(pid: int) -> str:
    return _stat(pid)[0]


def _process_of(pid: int) -> NodeProcess:
    me = this_process()
    assert me is not None, "these tests need Linux's /proc"
    return NodeProcess(me.boot_id, me.pid_namespace, pid, _start_time(pid))


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A real process to stand for another node's (killed by the test, or at the end)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait()


def _node(process: NodeProcess | None, machine: str | None = None) -> NodeInfo:
    now = datetime.now(UTC)
    return NodeInfo("other", None, None, machine, now, now, True, 0, process)


def test_this_process_is_read_from_proc() -> None:
    me = this_process()
    assert me is not None
    assert me.pid == os.getpid() and me.started == _start_time(os.getpid())
    assert me.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert me.pid_namespace == os.stat("/proc/self/ns/pid").st_ino


def test_a_process_is_dead_once_it_is_gone_or_a_zombie(child: subprocess.Popen[bytes]) -> None:
    me = this_process()
    node = _node(_process_of(child.pid))
    assert proof_of_death(me, None, node) is None  # running
    os.kill(child.pid, signal.SIGSTOP)
    assert proof_of_death(me, None, node) is None  # stopped: it may run again
    child.kill()
    for _ in range(1000):  # SIGKILL is delivered at once; the exit takes a moment
        if _state(child.pid) == "Z":
            break
        time.sleep(0.001)
    assert _state(child.pid) == "Z"  # not reaped yet: a zombie, which runs no code
    assert proof_of_death(me, None, node) == f"its process (pid {child.pid}) is gone"
    child.wait()
    assert proof_of_death(me, None, node) == f"its process (pid {child.pid}) is gone"


def test_a_reused_pid_does_not_keep_a_dead_node_alive() -> None:
    me = this_process()
    assert me is not None
    # Our own pid, started at another moment: the process that registered it is gone.
    earlier = replace(me, started=me.started - 1)
    assert proof_of_death(me, None, _node(earlier)) == f"its process (pid {me.pid}) is gone"
    assert proof_of_death(me, None, _node(me)) is None  # this very process: never


def test_nothing_is_proven_from_another_namespace_or_machine() -> None:
    me = this_process()
    assert me is not None
    nobody = 2**22 + 1  # above Linux's largest pid: no process has it
    # Another container on this host: same boot id, its own PID namespace.
    container = NodeProcess(me.boot_id, me.pid_namespace + 1, nobody, 5)
    assert proof_of_death(me, None, _node(container)) is None
    assert proof_of_death(me, "m1", _node(container, "m1")) is None
    # Another machine (another boot id): its pids mean nothing here.
    elsewhere = NodeProcess("another-boot", me.pid_namespace, nobody, 5)
    assert proof_of_death(me, None, _node(elsewhere)) is None
    assert proof_of_death(me, "m1", _node(elsewhere, "m2")) is None
    assert proof_of_death(me, None, _node(elsewhere, "m1")) is None  # ours is unknown
    assert proof_of_death(None, "m1", _node(elsewhere, "m1")) is None  # no /proc here
    # The same machine (an explicit id), booted again since: whatever ran there is gone.
    assert proof_of_death(me, "m1", _node(elsewhere, "m1")) == (
        "machine m1 rebooted since it started"
    )
    # Here, the same boot id: a pid that exists nowhere.
    assert proof_of_death(me, None, _node(replace(me, pid=nobody))) is not None


# -- nodes that prove deaths, on each backend --------------------------------------------------


async def _started(
    storage: Storage, node_id: str, ttl: float = LONG_TTL, machine: str | None = None
) -> ClusterNode:
    node = ClusterNode(storage, node_id, ttl, machine=machine)
    await node.start(None)
    return node


async def test_a_starting_node_takes_a_crashed_nodes_objects_at_once(
    storage: Storage, child: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    await storage.register_node("crashed", None, None, None, _process_of(child.pid))
    assert (await storage.claim(*K, "crashed", LONG_TTL)).granted
    child.kill()
    child.wait()
    caplog.set_level(logging.WARNING, logger="fastapi_objects")
    node = await _started(storage, "fresh")  # a restart: it reads the nodes, proves, declares
    try:
        assert "crashed" not in node.live
        (crashed,) = [n for n in await storage.nodes(LONG_TTL) if n.node_id == "crashed"]
        assert crashed.declared_dead
        claim = (await node.claim_many([K]))[K]
        assert (claim.granted, claim.taken_from) == (True, "crashed")
    finally:
        await node.stop()
    (line,) = [r.getMessage() for r in caplog.records if "takes over" in r.getMessage()]
    assert line == (
        f"node fresh takes over the objects of node crashed, dead: its process (pid "
        f"{child.pid}) is gone (proven by this node)"
    )


async def test_a_claim_refused_by_an_owner_that_died_takes_it_at_once(
    storage: Storage, child: subprocess.Popen[bytes]
) -> None:
    node = await _started(storage, "survivor")
    try:
        # A worker beside it, registered after its last read of the nodes, owns k.
        await storage.register_node("worker", None, None, None, _process_of(child.pid))
        assert (await storage.claim(*K, "worker", LONG_TTL)).granted
        refused = (await node.claim_many([K]))[K]  # alive: its object stays its own
        assert (refused.granted, refused.owner) == (False, "worker")
        assert "worker" in node.live  # (read again at the refusal: it registered since)
        child.kill()
        child.wait()
        # The next claim is refused by the database (the heartbeat is young), checked against
        # the nodes list, proven, declared, and claimed again: no waiting for node_ttl.
        taken = (await node.claim_many([K]))[K]
        assert (taken.granted, taken.taken_from) == (True, "worker")
        assert "worker" not in node.live
    finally:
        await node.stop()


async def test_a_node_sees_a_process_of_its_machine_exit_the_moment_it_does(
    storage: Storage, child: subprocess.Popen[bytes]
) -> None:
    # No claim, no heartbeat (the next is 10 s away): the exit itself wakes the node.
    await storage.register_node("worker", None, None, None, _process_of(child.pid))
    node = await _started(storage, "survivor")
    try:
        assert "worker" in node.live and "worker" not in node.deaths.exited
        death = node.death_of("worker")
        child.kill()
        await asyncio.wait_for(death, 5)
        assert "worker" not in node.live and "worker" in node.deaths.exited
        (worker,) = [n for n in await storage.nodes(LONG_TTL) if n.node_id == "worker"]
        assert worker.declared_dead
    finally:
        await node.stop()
    child.wait()


async def test_a_container_on_the_same_host_is_waited_for(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Another PID namespace, a pid no process has here: it proves nothing, as on another
    # machine; its objects are free only once its heartbeat is node_ttl old.
    me = this_process()
    assert me is not None
    ttl = 1.0
    container = NodeProcess(me.boot_id, me.pid_namespace + 1, 2**22 + 1, 5)
    caplog.set_level(logging.WARNING, logger="fastapi_objects")
    registered = asyncio.get_running_loop().time()  # (its heartbeat is stamped after this)
    await storage.register_node("container", None, None, "m1", container)
    assert (await storage.claim(*K, "container", ttl)).granted
    node = await _started(storage, "host", ttl, machine="m1")
    try:
        refused = (await node.claim_many([K]))[K]
        assert (refused.granted, refused.owner) == (False, "container")
        assert "container" in node.live
        while not (claim := (await node.claim_many([K]))[K]).granted:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - registered >= ttl - 0.05  # (clock rates)
        assert claim.taken_from == "container"
        nodes = {n.node_id: n for n in await storage.nodes(ttl)}
        assert not nodes["container"].declared_dead
    finally:
        await node.stop()
    (line,) = [r.getMessage() for r in caplog.records if "takes over" in r.getMessage()]
    assert line.endswith("of node container, dead: no heartbeat for over node_ttl (1s)")


async def test_a_rebooted_machine_is_proven_by_its_machine_id(storage: Storage) -> None:
    me = this_process()
    assert me is not None
    before = NodeProcess("the-boot-before", me.pid_namespace, 4321, 5)
    await storage.register_node("before-reboot", None, None, "m1", before)
    await storage.register_node("other-machine", None, None, "m2", before)
    node = await _started(storage, "after-reboot", machine="m1")
    try:
        nodes = {n.node_id: n for n in await storage.nodes(LONG_TTL)}
        assert nodes["before-reboot"].declared_dead
        assert nodes["other-machine"].alive and not nodes["other-machine"].declared_dead
    finally:
        await node.stop()


async def test_a_node_declared_dead_stops_serving_then_registers_again(storage: Storage) -> None:
    lost = []
    node = ClusterNode(storage, "wrongly", 0.6, on_lease_lost=lambda: lost.append(1))
    await node.start(None)
    try:
        assert node.deaths.process is not None
        assert await storage.declare_dead("wrongly", node.deaths.process)
        async with asyncio.timeout(5):
            while not lost:  # noqa: ASYNC110 - the node's own timers
                await asyncio.sleep(0.05)
            while not (await storage.nodes(0.6))[0].alive:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        (row,) = await storage.nodes(0.6)
        assert row.process == node.deaths.process and node.serving()
    finally:
        await node.stop()
