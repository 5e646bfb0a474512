"""Operator actions are turns (DESIGN §3): edits and restores run on the object's owner.

An inspector edit (a JSON Patch under the rev the operator saw) or a restore (to a kept state,
or for an event-sourced object to a point of its journal) is a turn of the object's one live
instance, routed like any call (forwarded when another node owns it, thawing it when no node
does): fenced by the owner's epoch and ``expected_rev``, held back by the output gate,
journaled (``objects:edit`` / ``objects:restore``, with the patch it made, its inverse and
who made it) and broadcast to attached clients. Nothing writes an object's rows behind its
owner's back. ``connections`` asks the owner who is attached, and never wakes the object.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._exceptions import CallTimeout, CorruptState, InvalidEdit, ObjectNotFound, StaleRevision
from ..cluster import Moved
from ..storage import Storage
from .edits import EDIT, RESTORE, apply_patch, check_patch, diff
from .object import EventSourced
from .routing import Elsewhere, Router
from .states import apply_entries, decode_state, new_state

if TYPE_CHECKING:
    from .activation import Activation
    from .calls import Calls
    from .connection import Connection
    from .object import DurableObject
    from .sleepers import Sleepers

CONNECTIONS = "objects:connections"
"""The internal method a node asks an object's owner for its attached clients under."""
_PAGE = 1_000  # journal entries read at a time when an event-sourced object is rebuilt

Turn = Callable[["Activation", bool, dict[str, Any]], Awaitable[dict[str, Any]]]


class Operator:
    """The operator's actions on objects: edit, restore, and who is attached."""

    def __init__(
        self,
        storage: Storage,
        calls: Calls,
        activations: dict[tuple[str, str], Activation],
        routing: Router,
        object_type: Callable[[str], type[DurableObject[Any]]],
        sleepers: Sleepers,
    ) -> None:
        self._storage = storage
        self._sleepers = sleepers
        self._calls = calls
        self._activations = activations
        self._routing = routing
        self._object_type = object_type
        self._turns: dict[str, Turn] = {EDIT: self._edit, RESTORE: self._restore}
        for method in self._turns:
            calls.internal[method] = functools.partial(self._serve, method)
        calls.internal[CONNECTIONS] = self._serve_connections

    async def edit(
        self, cls: type[DurableObject[Any]], key: str, patch: Any, rev: int, by: Any = None
    ) -> dict[str, Any]:
        """Apply ``patch`` as a turn on the owner if the object is still at ``rev``."""
        args = {"patch": check_patch(patch), "rev": _whole(rev, "rev"), "by": by}
        return await self._route(cls, key, EDIT, args)

    async def restore(
        self, cls: type[DurableObject[Any]], key: str, rev: int | None = None,
        at: datetime | str | None = None, by: Any = None,
    ) -> dict[str, Any]:
        """Restore the state kept at ``rev`` (or ``at``) as a turn on the owner."""
        if (rev is None) == (at is None):
            raise InvalidEdit("restore to a rev or to a time: pass one of rev= and at=")
        args = {
            "rev": None if rev is None else _whole(rev, "rev"),
            "at": None if at is None else _moment(at).isoformat(), "by": by,
        }
        return await self._route(cls, key, RESTORE, args)

    async def connections(self, cls: type[DurableObject[Any]], key: str) -> list[dict[str, Any]]:
        """The clients attached to the object, asked of its owner, and this node's own.

        This node's own: those that stayed attached while it hibernated (``sleepers.py``).
        """
        ident = (cls.type_name, key)
        act = self._activations.get(ident)
        if act is not None:
            return _attached(act)
        asleep = _described(self._sleepers.listed(f"{cls.type_name}:{key}"))
        owner = (await self._storage.owners([ident])).get(ident)
        node = self._routing.node.live.get(owner) if owner is not None else None
        if node is None or owner == self._routing.node.node_id:
            return asleep  # nobody holds it (or its owner is dead)
        try:
            found = await self._routing.forward(
                Elsewhere(node.node_id, node.address), cls.type_name, key, CONNECTIONS, {}
            )
        except Moved:  # it left that node meanwhile
            return asleep
        return [*found, *asleep]

    # -- routing -------------------------------------------------------------------------------

    async def _route(
        self, cls: type[DurableObject[Any]], key: str, method: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        if cls.persistence == "memory":  # no rev, no history: nothing an operator can name
            raise InvalidEdit(f"{cls.__name__} is a memory object: it has no rev to edit under "
                              "and nothing kept to restore")
        turn = self._turns[method]
        try:
            async with asyncio.timeout(cls.call_timeout):
                result: dict[str, Any] = await self._calls.route(
                    cls, key, lambda act, held: turn(act, held, args), method, args, dict
                )
        except TimeoutError:
            raise CallTimeout(
                f"{cls.type_name}:{key}: the {method} overran call_timeout={cls.call_timeout}s"
            ) from None
        return result

    async def _serve(
        self, method: str, type_name: str, key: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        """An edit or restore another node forwarded here (``Moved`` if not the owner)."""
        cls = self._object_type(type_name)
        turn = self._turns[method]
        if method == EDIT:
            args = {**args, "patch": check_patch(args.get("patch"))}
        result: dict[str, Any] = await self._calls.serve_here(
            cls, key, lambda act, held: turn(act, held, args)
        )
        return result

    async def _serve_connections(
        self, type_name: str, key: str, args: dict[str, Any]
    ) -> list[dict[str, Any]]:
        act = self._activations.get((type_name, key))
        return [] if act is None else _attached(act)

    # -- the turns -------------------------------------------------------------------------------

    async def _edit(self, act: Activation, held: bool, args: dict[str, Any]) -> dict[str, Any]:
        patch, rev = args["patch"], args["rev"]

        async def turn(obj: DurableObject[Any]) -> dict[str, Any]:
            if act.record.rev != rev:
                raise StaleRevision(
                    f"{act.topic} is at rev {act.record.rev}, not {rev}: reload it and edit "
                    "again (nothing changed)"
                )
            before = obj.state.model_dump(mode="json")
            obj.state = apply_patch(act.cls.state_model, obj.state, patch, act.topic)
            after = obj.state.model_dump(mode="json")
            entry = {"patch": patch, "undo": diff(after, before), "by": args.get("by")}
            return _journaled(act, EDIT, entry, after, {})

        result: dict[str, Any] = await act.run(turn, {}, held=held)
        return result

    async def _restore(
        self, act: Activation, held: bool, args: dict[str, Any]
    ) -> dict[str, Any]:
        async def turn(obj: DurableObject[Any]) -> dict[str, Any]:
            if act.record.last is not None:
                await act.record.last.wait()  # what it may restore is durable
            restored, state = await self._target(act, args.get("rev"), args.get("at"))
            before = obj.state.model_dump(mode="json")
            obj.state = state
            after = state.model_dump(mode="json")
            entry = {
                "rev": restored, "patch": diff(before, after), "undo": diff(after, before),
                "by": args.get("by"),
            }
            return _journaled(act, RESTORE, entry, after, {"restored": restored})

        result: dict[str, Any] = await act.run(turn, {}, held=held)
        return result

    async def _target(
        self, act: Activation, rev: int | None, at: str | None
    ) -> tuple[int, Any]:
        """The rev restored and its state: kept (history), or rebuilt from the journal."""
        cls, key, record = act.cls, act.key, act.record
        moment = None if at is None else _moment(at)
        what = f"rev {rev}" if rev is not None else f"{at}"
        if issubclass(cls, EventSourced):
            if rev is not None and rev > record.journal_rev:
                raise InvalidEdit(
                    f"{act.topic}: its journal ends at rev {record.journal_rev}; no rev {rev}"
                )
            found = await _rebuild(self._storage, cls, key, rev, moment)
            if found is None:
                raise ObjectNotFound(f"{act.topic}: no journal entry at or before {what}")
            return found
        if cls.__objects_history__ is None:
            raise InvalidEdit(
                f"{cls.__name__} keeps no history to restore from: set history = "
                "timedelta(days=7) on the class (event-sourced objects restore from their "
                "journal)"
            )
        if rev is not None and rev > record.rev:
            raise InvalidEdit(f"{act.topic} is at rev {record.rev}; no rev {rev} to restore")
        kept = await self._storage.kept_state(cls.type_name, key, rev=rev, at=moment)
        if kept is None:
            raise ObjectNotFound(
                f"{act.topic}: no state kept at or before {what} (history keeps "
                f"{cls.__objects_history__} of states)"
            )
        try:
            return kept.rev, decode_state(cls, act.topic, kept.state, kept.state_version)
        except CorruptState as exc:
            raise InvalidEdit(f"the state kept at rev {kept.rev}: {exc.message}") from None


def _journaled(
    act: Activation, kind: str, entry: dict[str, Any], state: Any, extra: dict[str, Any]
) -> dict[str, Any]:
    """Journal the change with the turn, tell attached clients after its commit; the answer."""
    new_rev = act.record.rev + 1  # the turn commits: it journals an entry
    act.turn().record(kind, entry)
    act.broadcast(kind, {"rev": new_rev, **extra}, None)
    return {"rev": new_rev, "state": state, **extra}


async def _rebuild(
    storage: Storage, cls: type[EventSourced[Any, Any]], key: str, rev: int | None,
    at: datetime | None,
) -> tuple[int, Any] | None:
    """An event-sourced object at journal rev ``rev`` (or time ``at``): snapshot plus events.

    From the stored snapshot when it is not past ``rev``, else from the start (the model's
    defaults). ``None`` when no entry is at or before ``at``.
    """
    topic = f"{cls.type_name}:{key}"
    state, after = new_state(cls, topic), 0
    if rev is not None:
        cp = await storage.load(cls.type_name, key)
        if cp is not None and cp.snapshot_rev <= rev:
            state = decode_state(cls, topic, cp.state, cp.state_version)
            after = cp.snapshot_rev
    last = after
    while True:
        page = await storage.read_journal(cls.type_name, key, after_rev=last, limit=_PAGE)
        wanted = list(itertools.takewhile(
            lambda e: (rev is None or e.rev <= rev) and (at is None or e.at <= at), page
        ))
        state, _ = apply_entries(cls, topic, state, wanted)
        if wanted:
            last = wanted[-1].rev
        if len(wanted) < _PAGE:
            break
    if last == 0 and at is not None:
        return None
    return last, state


def _attached(act: Activation) -> list[dict[str, Any]]:
    """The clients attached to a live instance: id, tags and per-connection state."""
    if act.closed or act.clients is None:
        return []
    return _described(act.clients.connections.values())


def _described(conns: Iterable[Connection]) -> list[dict[str, Any]]:
    """Connections as listings show them: id, tags and per-connection state."""
    return [{"id": c.id, "tags": sorted(c.tags), "state": c.state} for c in conns]


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidEdit(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def _moment(value: datetime | str) -> datetime:
    """A time to restore to; a naive one (or text without an offset) is taken as UTC."""
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEdit(
                f"at must be an ISO 8601 time such as 2026-05-01T12:00:00Z, got {text[:60]!r}"
            ) from None
    if not isinstance(value, datetime):
        raise InvalidEdit(f"at must be a time, got {type(value).__name__}")
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
