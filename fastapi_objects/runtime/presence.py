"""Presence: who is attached to an object, under which keys, with what metas (Phoenix's shapes).

A connection tracks itself under a key (a user id) with a meta (a small JSON object); one key
may have several metas, one per connection (tabs, devices). The metas live on the
``Connection`` (``conn.tracked``), so presence is derived from the object's attached clients
and lasts exactly as long as they do: a client that detaches, drops, or whose relaying node
dies takes its metas with it, and the others get the leaves.

Clients hear presence as two frames (``objects:`` events, reserved):

- ``objects:presence_state`` ``{key: {"metas": [...]}}``: the whole presence. A client gets it
  before any diff: just after ``objects:attached`` once anyone has tracked on the object (the
  attached frame then says ``"presence": true``), else just before the first diff.
- ``objects:presence_diff`` ``{"joins": {...}, "leaves": {...}}``: what changed. Each meta
  carries ``phx_ref`` (unique); an update is a leave of the old meta and a join of the new
  one, which carries ``phx_ref_prev``.

``track`` and ``untrack`` inside a turn take effect when the turn commits, like a broadcast
(the output gate): a turn that raises changes no presence. Each frame is encoded once for
all the clients it goes to.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json, to_json

from .._exceptions import InvalidCall
from ._log import log
from .storable import check_storable, storable_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .activation import Activation
    from .clients import Clients
    from .connection import Connection

# (connection.py imports this module: the reserved prefix is spelled out here.)
PRESENCE_STATE = "objects:presence_state"
PRESENCE_DIFF = "objects:presence_diff"
MAX_META = 4 * 1024
"""The most bytes of JSON one meta may take."""
MAX_KEY = 256
"""The longest presence key, in characters."""
MAX_KEYS = 16
"""The most keys one connection may be tracked under at once."""
_RESERVED_FIELDS = ("phx_ref", "phx_ref_prev")

MetaList = list[dict[str, Any]]
Metas = dict[str, dict[str, MetaList]]


class Presence:
    """What ``self.presence`` is: the object's presence, read from its attached clients.

    It shows what the clients were told: a ``track`` in the running turn appears once the
    turn commits. Example::

        async def on_connect(self, conn: Connection) -> None:
            conn.track(conn.auth["user"], {"device": conn.query.get("device", "web")})

        @client_callable
        async def online(self) -> list[str]:
            return sorted(self.presence.list())
    """

    __slots__ = ("_act",)

    def __init__(self, act: Activation) -> None:
        self._act = act

    def list(self) -> Metas:
        """Every tracked key: ``{key: {"metas": [meta, ...]}}`` (copies; oldest first)."""
        clients = self._act.clients
        return listing(clients.connections.values(), copy=True) if clients is not None else {}

    def get(self, key: str) -> MetaList:
        """The metas tracked under ``key`` (copies), ``[]`` when nobody is."""
        return self.list().get(key, {"metas": []})["metas"]


def listing(conns: Iterable[Connection], copy: bool = False) -> Metas:
    """The presence of ``conns``, Phoenix's ``list`` shape."""
    out: Metas = {}
    for conn in conns:
        for key, meta in (conn.tracked or {}).items():
            out.setdefault(key, {"metas": []})["metas"].append(dict(meta) if copy else meta)
    return out


# -- tracking -----------------------------------------------------------------------------------


def track(conn: Connection, key: str, meta: dict[str, Any] | None) -> None:
    """``conn.track``: check ``key`` and ``meta`` now, apply them when the turn commits."""
    key = _check_key(key)
    tracked = conn.tracked or {}
    if key not in tracked and len(tracked) >= MAX_KEYS:
        raise InvalidCall(f"conn.track({key!r}): a connection is tracked under at most "
                          f"{MAX_KEYS} keys; untrack one first")
    checked = _check_meta(key, {} if meta is None else meta)
    checked["phx_ref"] = os.urandom(8).hex()
    _at_commit(conn, lambda: _apply(conn, key, checked))


def untrack(conn: Connection, key: str) -> None:
    """``conn.untrack``: the metas of ``key`` leave when the turn commits (if tracked)."""
    key = _check_key(key)
    _at_commit(conn, lambda: _apply(conn, key, None))


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
        raise InvalidCall(f"a presence key is a string of 1 to {MAX_KEY} characters, not "
                          f"{_short(key)}")
    check_storable(key, f"presence key {key[:40]!r}")
    return key


def _check_meta(key: str, meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise InvalidCall(f"conn.track({key!r}, meta): meta must be a dict (a JSON object), "
                          f"not {type(meta).__name__}")
    reserved = [name for name in _RESERVED_FIELDS if name in meta]
    if reserved:
        raise InvalidCall(f"conn.track({key!r}, meta): {reserved[0]!r} is set by the server; "
                          "leave it out of the meta")
    text = storable_json(meta, f"presence meta of {key!r}")
    if len(text) > MAX_META:
        raise InvalidCall(f"conn.track({key!r}, meta): the meta is {len(text)} bytes of JSON; "
                          f"the limit is {MAX_META}")
    decoded: dict[str, Any] = from_json(text)  # a copy the app cannot change afterwards
    return decoded


def _short(value: Any) -> str:
    return repr(value)[:40] if isinstance(value, str) else type(value).__name__


def _at_commit(conn: Connection, action: Callable[[], None]) -> None:
    act = conn.activation
    turn = act.running_turn() if act is not None else None
    if turn is not None:
        turn.then(action)
    else:
        action()


def _apply(conn: Connection, key: str, meta: dict[str, Any] | None) -> None:
    """Apply a committed ``track`` (``meta``) or ``untrack`` (``None``) and tell the clients."""
    act = conn.activation
    clients = act.clients if act is not None and not act.closed else None
    if clients is None or clients.connections.get(conn.id) is not conn:
        return  # it left before the turn committed: its leaves went out then
    tracked = conn.tracked or {}
    old = tracked.get(key)
    if meta is None and old is None:
        return
    if meta is not None and old is None and len(tracked) >= MAX_KEYS:
        log.warning("%s: conn.track(%r) dropped: the connection is tracked under %d keys",
                    conn.topic, key, MAX_KEYS)
        return
    if meta is not None and old is not None:
        meta["phx_ref_prev"] = old["phx_ref"]

    def change() -> None:
        if meta is None:
            tracked.pop(key)
        else:
            tracked[key] = meta
        conn.tracked = tracked or None

    publish(clients, conn.topic, {key: {"metas": [meta]}} if meta is not None else {},
            {key: {"metas": [old]}} if old is not None else {}, change)


# -- telling the clients ------------------------------------------------------------------------


def attached(clients: Clients, conn: Connection) -> None:
    """A client just joined ``clients``: its state now, if presence is in use on the object."""
    if clients.presence_used:
        conns = clients.connections.values()
        conn.presence_synced = True
        conn.send_text(_frame(conn.topic, PRESENCE_STATE, listing(conns)))


def left(clients: Clients, conn: Connection) -> None:
    """``conn`` was dropped from ``clients``: its metas leave (the others hear it)."""
    tracked, conn.tracked = conn.tracked, None
    if tracked:
        leaves = {key: {"metas": [meta]} for key, meta in tracked.items()}
        publish(clients, conn.topic, {}, leaves, lambda: None)


def publish(
    clients: Clients,
    topic: str,
    joins: dict[str, Any],
    leaves: dict[str, Any],
    change: Callable[[], None],
) -> None:
    """Make ``change`` and send its diff to every client; each frame is encoded once.

    A client that has no state yet first gets the state as it was before ``change``.
    """
    conns = clients.connections.values()
    unsynced = [c for c in conns if not c.presence_synced]
    if unsynced:
        state = _frame(topic, PRESENCE_STATE, listing(conns))
        for conn in unsynced:
            conn.presence_synced = True
            conn.send_text(state)
    clients.presence_used = True
    change()
    diff = _frame(topic, PRESENCE_DIFF, {"joins": joins, "leaves": leaves})
    for conn in conns:
        conn.send_text(diff)


def _frame(topic: str, event: str, payload: Any) -> str:
    # Metas were checked to be storable JSON (no NaN, no NUL): plain encoding is strict JSON.
    return to_json({"topic": topic, "event": event, "payload": payload}).decode()
