"""Proving from this process that another node is dead, so as not to wait ``node_ttl`` for it.

A node records its process (``NodeProcess``): the machine's boot id, its PID namespace, its pid
and the process's start time. Another node proves it dead in two cases, and only these:

- **same boot id and same PID namespace**, and no process with that pid and start time exists
  (or it is a zombie: it runs no code). A restarted process, a uvicorn worker that died (the
  others see the corpse), a supervisor's restart. Two containers on one host share the boot id
  but not the PID namespace: a pid of theirs means nothing here, so they prove nothing;
- **the same machine rebooted**: both nodes carry the same machine id, set explicitly to one
  unique per machine (``FLY_MACHINE_ID`` or ``OBJECTS_MACHINE``, never a hostname guess), and
  the recorded boot id is not this boot's.

Anywhere else (another machine, no ``/proc``) nothing is proven and a death is ``node_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
from collections.abc import Callable, Iterable
from pathlib import Path

from .._exceptions import StorageUnavailable
from .._tasks import cancel_and_wait
from ..storage import Claim, NodeInfo, NodeProcess, Storage

log = logging.getLogger("fastapi_objects")

PROC = Path("/proc")


class Deaths:
    """This node's view of the dead: whom it proved dead (and why), and the takeovers logged."""

    def __init__(
        self, storage: Storage, node_id: str, machine: str | None,
        on_dead: Callable[[set[str]], None] = lambda _: None,
    ) -> None:
        self.storage = storage
        self.node_id = node_id
        self.machine = machine
        self.on_dead = on_dead  # told the nodes this one declared dead
        self.process: NodeProcess | None = None
        """This process, as the nodes of its machine check it (read by ``start``)."""
        self.seen: dict[str, NodeInfo] = {}
        """Every registered node, as the last read of the nodes found it."""
        self.exited: dict[str, NodeProcess] = {}
        """Nodes of this machine whose process this one saw exit: send them nothing."""
        self._proven: dict[str, str] = {}
        self._logged: set[str] = set()
        self._pidfds: dict[str, int] = {}
        self._watched: dict[int, tuple[str, NodeProcess]] = {}  # by pidfd
        self._poll: select.poll | None = None  # the same pidfds, checked without the loop
        self._burials: set[asyncio.Task[set[str]]] = set()

    def start(self) -> None:
        """Read this process's identity (in the process that serves: after any fork)."""
        self.process = this_process()

    def saw(self, nodes: Iterable[NodeInfo]) -> None:
        """The nodes as the database lists them now (pruned rows are forgotten)."""
        self.seen = {n.node_id: n for n in nodes}
        self._proven = {i: why for i, why in self._proven.items() if i in self.seen}
        self._logged &= self.seen.keys()
        self.exited = {  # (a node id registered again by another process is not that one)
            i: p for i, p in self.exited.items() if i in self.seen and self.seen[i].process == p
        }

    def watch(self, live: Iterable[NodeInfo]) -> None:
        """Bury each live node of this machine the moment its process exits.

        One pidfd per such node (Linux 5.3+): the loop sees it readable once the process has
        exited, and marks it ``exited`` before any call can be sent to it, at no cost per call.
        """
        loop = asyncio.get_running_loop()
        nodes = {n.node_id: n for n in live}
        for node_id in set(self._pidfds) - nodes.keys():
            self._unwatch(node_id)
        for node_id, node in nodes.items():
            if node_id in self._pidfds or node.process is None or not self._local(node):
                continue
            fd = _pidfd(node.process)
            if fd is not None:  # (so this is Linux, which has poll)
                self._pidfds[node_id] = fd
                self._watched[fd] = (node_id, node.process)
                self._poll = self._poll or select.poll()
                self._poll.register(fd, select.POLLIN)
                loop.add_reader(fd, self._exited, node_id, node.process)

    def has_exited(self, node_id: str) -> bool:
        """Whether ``node_id``'s process exited, as of now (one ``poll(2)``, ~1 us).

        The loop may not have run the exit's callback yet when a call is about to be sent
        there: this checks the pidfds themselves.
        """
        for fd, _ in self._poll.poll(0) if self._pidfds and self._poll else ():
            self._exited(*self._watched[fd])
        return node_id in self.exited

    def _exited(self, node_id: str, process: NodeProcess) -> None:
        if node_id not in self._pidfds:  # seen already (by has_exited, or the loop)
            return
        self._unwatch(node_id)
        self.exited[node_id] = process
        task = asyncio.get_running_loop().create_task(self.bury([node_id]), name="objects-bury")
        self._burials.add(task)
        task.add_done_callback(self._burials.discard)

    def _unwatch(self, node_id: str) -> None:
        fd = self._pidfds.pop(node_id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            if self._poll is not None:
                self._poll.unregister(fd)
            del self._watched[fd]
            os.close(fd)

    async def close(self) -> None:
        """Stop watching processes (and burying them)."""
        for node_id in list(self._pidfds):
            self._unwatch(node_id)
        for task in list(self._burials):
            await cancel_and_wait(task)

    def _local(self, node: NodeInfo) -> bool:
        """Whether ``node`` is another process of this machine and PID namespace."""
        me, other = self.process, node.process
        return (
            me is not None and other is not None and other.boot_id == me.boot_id
            and other.pid_namespace == me.pid_namespace and other != me
        )

    async def bury(self, node_ids: Iterable[str]) -> set[str]:
        """Declare dead in the database the nodes of ``node_ids`` this process proves dead.

        Checked against the nodes as the last read found them. A declaration holds only while
        the node's row still names the process proven dead (not a later one registered under
        the same id). Returns the ids declared dead, as ``on_dead`` is told.
        """
        dead = set()
        for node_id in set(node_ids) - {self.node_id}:
            node = self.seen.get(node_id)
            why = None if node is None else proof_of_death(self.process, self.machine, node)
            if node is None or node.process is None or why is None:
                continue
            try:
                if await self.storage.declare_dead(node_id, node.process):
                    dead.add(node_id)
                    self._proven[node_id] = why
            except StorageUnavailable as exc:
                log.debug("could not declare node %s dead: %s", node_id, exc.message)
        if dead:
            self.on_dead(dead)
        return dead

    def first_takeovers(self, claims: Iterable[Claim]) -> list[str]:
        """The dead nodes ``claims`` took objects from that no takeover was logged for yet."""
        taken = {c.taken_from for c in claims if c.granted and c.taken_from is not None}
        new = sorted(taken - self._logged)
        self._logged.update(new)
        return new

    def knows_death_of(self, node_id: str) -> bool:
        """Whether this node proved ``node_id`` dead, or its last read of the nodes showed it."""
        node = self.seen.get(node_id)
        return node_id in self._proven or (node is not None and not node.alive)

    def why(self, node_id: str, ttl: float) -> str:
        """How this node knows that ``node_id`` is dead, for the log."""
        node = self.seen.get(node_id)
        why = self._proven.get(node_id) or (
            node and proof_of_death(self.process, self.machine, node)
        )
        if why:
            return f"{why} (proven by this node)"
        if node is None:
            return "it is no longer registered (its row was pruned)"
        if node.declared_dead:
            return "proven dead by another node of its machine"
        return f"no heartbeat for over node_ttl ({ttl:g}s)"


def this_process() -> NodeProcess | None:
    """This process as other processes of its machine can check it; ``None`` when they cannot.

    ``None`` without Linux's ``/proc``, and when ``/proc`` belongs to another PID namespace
    than this process's (``/proc/self`` is not this pid): pids read there would mean nothing.
    """
    try:
        boot_id = (PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat(PROC / "self/ns/pid").st_ino
        if os.readlink(PROC / "self") != str(os.getpid()):
            return None
    except OSError:
        return None
    found = _stat(os.getpid())
    if not boot_id or found is None:
        return None
    return NodeProcess(boot_id, namespace, os.getpid(), found[2])


def proof_of_death(me: NodeProcess | None, machine: str | None, node: NodeInfo) -> str | None:
    """Why ``node`` is certainly dead, as this process (``me`` on ``machine``) sees it.

    ``None`` when it cannot be proven from here: it may be alive.
    """
    other = node.process
    if me is None or other is None:
        return None
    if machine is not None and node.machine == machine and other.boot_id != me.boot_id:
        return f"machine {machine} rebooted since it started"
    if other.boot_id != me.boot_id or other.pid_namespace != me.pid_namespace:
        return None  # another machine, or another container: its pids are not ours
    if other.pid == me.pid and other.started == me.started:
        return None  # this very process (several runtimes in one process)
    if _gone(other.pid, other.started):
        return f"its process (pid {other.pid}) is gone"
    return None


def _gone(pid: int, started: int) -> bool:
    """Whether no live process has ``pid`` with this start time (pids are reused)."""
    try:
        os.kill(pid, 0)  # no signal sent: only whether the pid exists
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, as another user's process
    found = _stat(pid)
    if found is None:  # unreadable (``hidepid``), or it exited just now: not proven
        return False
    state, threads, start = found
    # A zombie with no thread left runs no code: its parent has not reaped it yet.
    return start != started or (state in ("Z", "X") and threads <= 1)


def _pidfd(process: NodeProcess) -> int | None:
    """A pidfd of ``process`` (``None``: gone already, or no pidfds here)."""
    try:
        fd = os.pidfd_open(process.pid)
    except (OSError, AttributeError):  # gone, or not Linux 5.3+
        return None
    found = _stat(process.pid)  # after the open: the fd is of the process this stat describes
    if found is None or found[2] != process.started:
        os.close(fd)
        return None
    return fd


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, threads and start time (clock ticks after boot) from ``/proc/<pid>/stat``."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 2 is the command in parentheses, which may itself hold spaces and ")"; the rest
    # are numbered from 3 (state): 20 is the thread count, 22 the start time.
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[20 - 3]), int(fields[22 - 3])
