"""``Sync``: an activation's part keeping its attached clients' views of the state."""

from __future__ import annotations

import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import to_json

from ..storable import strict_json
from .frames import (
    HISTORY,
    HISTORY_CHARS,
    INVALID_REV,
    MAX_REV,
    REV_PARAM,
    RUN_PARAM,
    STATE,
    STATE_PATCH,
    error_frame,
    frame,
    patch_payload,
    state_payload,
)
from .jsondiff import diff

if TYPE_CHECKING:
    from ..activation import Activation
    from ..connection import Connection

log = logging.getLogger("fastapi_objects")

Mode = Literal["shared", "connection"]


class _Failed(Exception):
    """A view could not be made; the error frame for its client is already queued."""


class Sync:
    """An activation's part that keeps its attached clients' views (classes that opted in).

    The shared view (``sync_state``) lives here with its recent patches; each connection
    keeps the view it was last sent (``conn.sync_view`` at ``conn.sync_rev``), so a
    connection whose view is not the shared one (it attached to an earlier instance) gets a
    patch of its own.
    """

    __slots__ = ("_act", "checked_rev", "history", "history_chars", "mode", "run", "view",
                 "view_rev")

    def __init__(self, act: Activation, mode: Mode) -> None:
        self._act = act
        self.mode = mode
        self.run = uuid.uuid4().hex[:16]
        self.view: Any = None  # the shared view, once made (``view_rev`` >= 0)
        self.view_rev = -1
        self.checked_rev = -1  # the last rev whose state the views were compared with
        self.history: deque[tuple[int, int, str]] = deque()  # (base, rev, patch JSON)
        self.history_chars = 0

    # -- after each turn ---------------------------------------------------------------------

    def turn_ended(self) -> None:
        """A mutating turn ended (its commit queued): patch the views it changed.

        Never raises: the turn's commit is already on its way.
        """
        try:
            if self.mode == "shared":
                self._publish()
            else:
                self._each_connection()
        except Exception:
            log.exception("%s: state sync failed after a turn", self._act.topic)

    def _publish(self) -> None:
        """Bring the shared view to the state now and send the change to every client."""
        rev = self._act.record.rev
        if rev == self.checked_rev:
            return
        self.checked_rev = rev
        old, base = self.view, self.view_rev
        new = self._act.instance.state.model_dump(mode="json")
        shared: str | None = None
        if base >= 0:
            ops = diff(old, new)
            if not ops:
                return
            patch = to_json(ops).decode()
            self._remember(base, rev, patch)
            shared = self._frame(STATE_PATCH, patch_payload(rev, base, patch))
        # (No view yet: this instance just thawed. Clients that slept through the hibernation
        # hold a view of an earlier instance, and get a patch of their own below.)
        self.view, self.view_rev = new, rev
        clients = self._act.clients
        if clients is None:
            return
        sends = []
        for conn in clients.connections.values():
            if conn.sync_rev is None:
                continue  # its first view is still to come
            if shared is not None and conn.sync_view is old:
                text: str | None = shared
            else:  # a view from an earlier instance of the object
                mine = diff(conn.sync_view, new)
                text = self._frame(STATE_PATCH, patch_payload(
                    rev, conn.sync_rev, to_json(mine).decode())) if mine else None
            conn.sync_view, conn.sync_rev = new, rev
            if text is not None:
                sends.append((conn, text))
        self._after_commit(sends)

    def _each_connection(self) -> None:
        """Compute each client's view; send each one that changed its patch."""
        act = self._act
        rev = act.record.rev
        clients = act.clients
        if rev == self.checked_rev or clients is None:
            return
        self.checked_rev = rev
        sends: list[tuple[Connection, str]] = []
        for conn in list(clients.connections.values()):
            if conn.sync_rev is None:
                continue
            try:
                new, _ = self._client_view(conn, sends)
            except _Failed:
                continue
            ops = diff(conn.sync_view, new)
            if ops:
                payload = patch_payload(rev, conn.sync_rev, to_json(ops).decode())
                sends.append((conn, self._frame(STATE_PATCH, payload)))
                conn.sync_view, conn.sync_rev = new, rev
        self._after_commit(sends)

    # -- a client's whole view ---------------------------------------------------------------

    def join(self, conn: Connection) -> list[str]:
        """The frames that give a newly attached ``conn`` its view (inside a read-only turn).

        One patch from the rev it resumes from (``objects_rev``/``objects_run``) when that is
        in the history and smaller than the whole view; else the whole view. A malformed
        ``objects_rev`` gets an ``invalid_rev`` error frame first.
        """
        texts: list[tuple[Connection, str]] = []
        resumed = self._resume_point(conn, texts)
        try:
            self._give_view(conn, texts, resumed)
        except _Failed:
            pass
        return [text for _, text in texts]

    def resend(self, conn: Connection) -> None:
        """Send ``conn`` its whole view after the latest commit (inside a read-only turn)."""
        sends: list[tuple[Connection, str]] = []
        try:
            self._give_view(conn, sends, None)
        except _Failed:
            pass
        self._after_commit(sends)

    def _give_view(
        self, conn: Connection, out: list[tuple[Connection, str]], resumed: int | None
    ) -> None:
        if self.mode == "connection":
            (view, text), rev = self._client_view(conn, out), self._act.record.rev
        else:
            self._publish()  # changes made while no client was attached: into the history
            view, rev = self.view, self.view_rev
            text = strict_json(view, "the view")
        conn.sync_view, conn.sync_rev = view, rev
        whole = self._frame(STATE, state_payload(rev, text, self.run))
        patch = self._since(resumed) if resumed is not None else None
        if resumed is not None and patch is not None:
            text = self._frame(STATE_PATCH, patch_payload(rev, resumed, patch))
            if len(text) < len(whole):
                out.append((conn, text))
                return
        out.append((conn, whole))

    def _since(self, rev: int) -> str | None:
        """The history's patches from ``rev`` to the shared view now, as one patch."""
        if self.mode != "shared" or rev > self.view_rev:
            return None
        if rev == self.view_rev:
            return "[]"
        parts: list[str] = []
        for base, _, patch in self.history:
            if parts or base == rev:
                parts.append(patch[1:-1])
        if not parts:
            return None
        return "[" + ",".join(part for part in parts if part) + "]"

    def _resume_point(self, conn: Connection, out: list[tuple[Connection, str]]) -> int | None:
        """The rev ``conn`` resumes from, when it names this run; a malformed one is told."""
        raw = conn.query.get(REV_PARAM)
        if raw is None:
            return None
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_REV:
            message = (f"{REV_PARAM}={raw[:40]!r} is not a revision (an integer from 0 to "
                       "2**53, from an objects:state frame); the whole view follows")
            out.append((conn, error_frame(INVALID_REV, message)))
            return None
        return int(raw) if conn.query.get(RUN_PARAM) == self.run else None

    # -- helpers -----------------------------------------------------------------------------

    def _client_view(
        self, conn: Connection, out: list[tuple[Connection, str]]
    ) -> tuple[Any, str]:
        """``client_view(conn)`` and its strict JSON; a failure is logged, told: ``_Failed``."""
        act = self._act
        try:
            view = act.instance.client_view(conn)
            text = strict_json(view, "the view")
        except Exception as exc:
            error_id = uuid.uuid4().hex[:16]  # as fastapi/errors.py: the log has the traceback
            log.error("internal error %s in %s.client_view()", error_id, act.topic,
                      exc_info=exc)
            out.append((conn, error_frame("internal_error", f"internal error {error_id}")))
            raise _Failed from None
        return view, text

    def _frame(self, event: str, payload: str) -> str:
        return frame(self._act.topic, event, payload)

    def _remember(self, base: int, rev: int, patch: str) -> None:
        history = self.history
        history.append((base, rev, patch))
        self.history_chars += len(patch)
        while history and (len(history) > HISTORY or self.history_chars > HISTORY_CHARS):
            self.history_chars -= len(history.popleft()[2])

    def _after_commit(self, sends: list[tuple[Connection, str]]) -> None:
        """Send once the latest commit is durable (now, if it is): the output gate."""
        if not sends:
            return

        def deliver() -> None:
            for conn, text in sends:
                conn.send_text(text)

        last = self._act.record.last
        if last is None or (last.done and last.error is None):
            deliver()
        elif not last.done:
            last.then((deliver,))
