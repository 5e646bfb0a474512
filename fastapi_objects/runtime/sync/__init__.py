"""State sync: attached clients hold a view of their object's state, kept current by patches.

A class opts in with ``sync_state = True`` (every client sees the whole state as JSON) or by
defining ``client_view(self, conn)`` (a view per connection: hide fields, filter by user).
Clients never write the view: only the object's methods change its state, on the server.

Frames (server -> client, after ``objects:attached``)::

    objects:state        {"rev", "state", "run"}   the whole view, first; and on request
    objects:state_patch  {"rev", "base", "patch"}  RFC 6902 operations turning the view the
                                                   client holds at rev ``base`` into ``rev``

and client -> server ``{"event": "objects:state_request"}``: send me the whole view (the
client found a gap: a patch whose ``base`` is not its rev). ``rev`` is the object's
revision (``Record.rev``: durable, it never goes back, even across hibernation) at the
commit that last changed this view; ``run`` names this activation. A client reconnecting
with ``?objects_rev=<rev>&objects_run=<run>`` resumes: it gets one patch from its rev to
now, or the whole view when that is smaller, or when its rev is not in the history (``HISTORY``
patches per object, in memory, for the shared view; a per-connection view always starts
whole).

Views are computed only for classes that opted in and only while clients are attached: after
each turn that committed (once for all clients with ``sync_state``, encoded once; per
connection with ``client_view``), and sent through the output gate like a broadcast, once
that commit is durable. See ``docs/state-sync.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._exceptions import StorageUnavailable
from ..turn import Stale
from .frames import (
    HISTORY,
    HISTORY_CHARS,
    INVALID_REV,
    REV_PARAM,
    RUN_PARAM,
    STATE,
    STATE_PATCH,
    STATE_REQUEST,
)
from .views import Mode, Sync

if TYPE_CHECKING:
    from ..connection import Connection
    from ..object import DurableObject

__all__ = [
    "HISTORY",
    "HISTORY_CHARS",
    "INVALID_REV",
    "REV_PARAM",
    "RUN_PARAM",
    "STATE",
    "STATE_PATCH",
    "STATE_REQUEST",
    "Mode",
    "Sync",
    "join",
    "request",
    "sync_mode",
]


def sync_mode(cls: type[DurableObject[Any]]) -> Mode | None:
    """How a class syncs its state: ``"connection"`` (``client_view``), ``"shared"``, or not."""
    view = cls.client_view
    if not getattr(view, "__objects_default__", False):
        if inspect.iscoroutinefunction(view):
            raise TypeError(f"{cls.__name__}.client_view must be a plain def: it runs at the "
                            "end of every turn, with nothing to await")
        return "connection"
    if not isinstance(cls.sync_state, bool):
        raise TypeError(f"{cls.__name__}.sync_state must be True or False")
    return "shared" if cls.sync_state else None


async def _in_turn(conn: Connection, action: Callable[[Sync], Any]) -> Any:
    """Run ``action`` on the object's ``Sync`` in a read-only turn; return once it may leave.

    The turn waits for the mutating one running, so the view is of a finished turn's state;
    what it returns leaves once that state's commit is durable.
    """
    act = conn.activation
    if act is None or act.closed:
        raise StorageUnavailable(f"{conn.topic} was reloaded; reconnect to continue")
    sync = act.sync
    assert sync is not None
    out: list[Any] = []

    async def turn(_: Any) -> None:
        out.append(action(sync))

    try:
        await act.run(turn, {}, readonly=True, name=STATE)
    except Stale:
        raise StorageUnavailable(f"{conn.topic} was reloaded; reconnect to continue") from None
    return out[0]


async def join(conn: Connection) -> list[str]:
    """The frames giving a newly attached client its view, once they may leave (``[]``: no sync).

    Never raises for a dropped object: its clients are being closed (1012) already.
    """
    act = conn.activation
    if act is None or act.sync is None:
        return []
    try:
        frames: list[str] = await _in_turn(conn, lambda sync: sync.join(conn))
    except StorageUnavailable:
        return []
    return frames


async def request(conn: Connection) -> None:
    """Send an attached client its whole view again (it asked: ``objects:state_request``).

    ``StorageUnavailable`` when its object was dropped meanwhile (the client reconnects).
    """
    if conn.activation is not None and conn.activation.sync is None:
        return
    await _in_turn(conn, lambda sync: sync.resend(conn))
