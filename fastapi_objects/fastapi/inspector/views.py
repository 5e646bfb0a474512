"""What the inspector shows, read without waking anything: the API answers it, the page renders it.

Everything here reads storage (checkpoints, journal, kept states, alarms, owners, nodes) or
asks an object's owner (its attached clients), never a live instance's state: an object
listed or looked at stays hibernated. Event-sourced objects are shown as a thaw would make
them, from their snapshot and journal.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..._exceptions import ObjectNotFound
from ...runtime.keys import validate_key
from ...runtime.object import EventSourced
from ...runtime.queues import QUEUE_TYPE, ObjectsQueue, QueueState
from ...runtime.states import read_state
from ...storage import STATUSES
from .models import (
    AlarmInfo,
    ConnectionInfo,
    HistoryPage,
    JobInfo,
    JournalEntryOut,
    JournalPage,
    KeptInfo,
    NodeInfoOut,
    NodeList,
    ObjectDetail,
    ObjectList,
    ObjectSummary,
    QueueInfo,
    QueueList,
    QueueSummary,
    TypeInfo,
    TypeList,
)

if TYPE_CHECKING:
    from ...runtime import Runtime

MAX_PAGE = 1_000
"""The most rows one request reads (journal entries, kept states, objects, queues)."""


async def types(runtime: Runtime) -> TypeList:
    """Every registered type, with its stored objects counted by status."""
    counts: dict[str, dict[str, int]] = {}
    for row in await runtime.type_stats():
        counts.setdefault(row.type, {})[row.status] = row.count
    found = []
    for name, cls in sorted(runtime.types.items()):
        by_status = {status: counts.get(name, {}).get(status, 0) for status in STATUSES}
        window = cls.__objects_history__
        found.append(TypeInfo(
            type=name, counts=by_status, total=sum(by_status.values()),
            event_sourced=issubclass(cls, EventSourced),
            history=None if window is None else window.total_seconds(), public=cls.public,
        ))
    return TypeList(types=found)


async def listing(
    runtime: Runtime, type_name: str, *, status: str | None, prefix: str | None,
    updated_after: datetime | None, updated_before: datetime | None, cursor: str | None,
    limit: int,
) -> ObjectList:
    """A page of a type's stored objects with their owners (one query each)."""
    page = await runtime.query(
        type_name, status=status, key_prefix=prefix or None, updated_after=updated_after,
        updated_before=updated_before, cursor=cursor, limit=limit,
    )
    owners = await runtime.storage.owners([(cp.type, cp.key) for cp in page.items])
    return ObjectList(objects=[
        ObjectSummary(
            key=cp.key, rev=cp.rev, state_version=cp.state_version, status=cp.status,
            owner=owners.get((cp.type, cp.key)), created_at=cp.created_at,
            updated_at=cp.updated_at,
        ) for cp in page.items
    ], next=page.next_cursor)


async def detail(runtime: Runtime, type_name: str, key: str) -> ObjectDetail:
    """One object as stored, its alarms, its owner and the clients attached there."""
    cls = runtime.object_type(type_name)
    key = validate_key(key)
    found = await read_state(runtime.storage, cls, key)
    if found is None:
        raise ObjectNotFound(f"no object {type_name}:{key} is stored")
    cp, state = found
    owner = (await runtime.storage.owners([(type_name, key)])).get((type_name, key))
    alarms = await runtime.storage.load_alarms(type_name, key)
    return ObjectDetail(
        type=type_name, key=key, rev=cp.rev, state_version=cp.state_version, status=cp.status,
        owner=owner, state=state.model_dump(mode="json"),
        alarms=[
            AlarmInfo(
                name=a.name, status=a.status, due_at=a.due_at, scheduled_at=a.scheduled_at,
                retry_count=a.retry_count, every=a.every, cron=a.cron, last_error=a.last_error,
                payload=a.payload,
            ) for a in alarms
        ],
        connections=[
            ConnectionInfo(**c) for c in await runtime.connections(cls, key)
        ] if owner is not None else [],
    )


async def journal(
    runtime: Runtime, type_name: str, key: str, after: int, limit: int
) -> JournalPage:
    """Journal entries after ``after``; ``next`` when there may be more."""
    cls = runtime.object_type(type_name)
    entries = await runtime.journal(cls, key, after_rev=after, limit=limit)
    return JournalPage(
        entries=[JournalEntryOut(rev=e.rev, kind=e.kind, payload=e.payload, at=e.at)
                 for e in entries],
        next=entries[-1].rev if len(entries) == limit else None,
    )


async def history(
    runtime: Runtime, type_name: str, key: str, before: int | None, limit: int
) -> HistoryPage:
    """Kept states, newest first; ``next`` when there may be more."""
    cls = runtime.object_type(type_name)
    kept = await runtime.history(cls, key, before_rev=before, limit=limit)
    return HistoryPage(
        revisions=[KeptInfo(rev=k.rev, at=k.at, state_version=k.state_version) for k in kept],
        next=kept[-1].rev if len(kept) == limit else None,
    )


async def nodes(runtime: Runtime) -> NodeList:
    """The registered nodes by the database's clock: alive or dead, lease left, objects owned."""
    ttl = runtime.settings.node_ttl
    found = await runtime.storage.nodes(ttl)
    now = await runtime.storage.clock()
    rows = []
    for node in found:
        age = max(0.0, (now - node.heartbeat_at).total_seconds())
        rows.append(NodeInfoOut(
            node_id=node.node_id, address=node.address, region=node.region,
            machine=node.machine, pid=node.process.pid if node.process else None,
            started_at=node.started_at,
            heartbeat_at=None if node.declared_dead else node.heartbeat_at,
            state="alive" if node.alive else "dead (proven)" if node.declared_dead else "dead",
            lease_left=max(0.0, ttl - age) if node.alive else 0.0, owned=node.owned,
        ))
    return NodeList(nodes=rows, ttl=ttl, this_node=runtime.node_id)


async def queue(runtime: Runtime, name: str) -> QueueInfo:
    """A durable queue's jobs, from its snapshot and journal (the queue is not woken)."""
    state = await _queue_state(runtime, validate_key(name))
    if state is None:
        raise ObjectNotFound(f"no queue {name!r} is stored")
    jobs: dict[str, list[JobInfo]] = {"ready": [], "claimed": [], "dead": []}
    for job in sorted(state.jobs.values(), key=lambda j: (j.visible_at, j.id)):
        jobs[job.status].append(JobInfo(**job.model_dump(exclude={"token_hash", "claim_id"})))
    return QueueInfo(
        name=name, pending=jobs["ready"], leased=jobs["claimed"], dead=jobs["dead"],
        completed=state.completed,
    )


async def queues(runtime: Runtime, cursor: str | None, limit: int) -> QueueList:
    """The stored queues, with their job counts."""
    page = await runtime.query(QUEUE_TYPE, cursor=cursor, limit=limit)
    found = []
    for cp in page.items:
        state = await _queue_state(runtime, cp.key)
        if state is None:  # deleted meanwhile
            continue
        count = {"ready": 0, "claimed": 0, "dead": 0}
        for job in state.jobs.values():
            count[job.status] += 1
        found.append(QueueSummary(
            name=cp.key, pending=count["ready"], leased=count["claimed"], dead=count["dead"],
            completed=state.completed,
        ))
    return QueueList(queues=found, next=page.next_cursor)


async def _queue_state(runtime: Runtime, name: str) -> QueueState | None:
    found = await read_state(runtime.storage, ObjectsQueue, name)
    if found is None:
        return None
    state: Any = found[1]
    assert isinstance(state, QueueState)
    return state
