"""``Connection``: one client attached to an object (a websocket, seen without HTTP)."""

from __future__ import annotations

import uuid
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic_core import to_json

from . import presence

if TYPE_CHECKING:
    from .activation import Activation

MAX_CONNECTION_STATE = 16 * 1024

RESERVED_EVENT_PREFIX = "objects:"
"""Events starting with this are the protocol's own frames (``objects:attached``)."""


def check_event(event: str) -> None:
    """Refuse (``ValueError``) an event name the app may not send: ``objects:`` is reserved."""
    if event.startswith(RESERVED_EVENT_PREFIX):
        raise ValueError(
            f"event {event!r}: names starting with {RESERVED_EVENT_PREFIX!r} are reserved for "
            "the protocol's own frames"
        )


class CloseCode(IntEnum):
    """Websocket close codes the server uses (``fastapi_objects.fastapi.protocol`` lists them).

    Here, where both sides see them: the runtime closes clients with some (an instance
    dropped, too many clients), the web integration with the others.
    """

    NORMAL = 1000
    ATTACH_FAILED = 1011
    RELOADED = 1012
    TOO_MANY_CLIENTS = 1013
    INVALID_KEY = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    UNKNOWN_TYPE = 4404
    TOO_SLOW = 4408


class Transport(Protocol):
    """How the runtime reaches a client; the web integration implements it."""

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the client (must not block)."""

    def close(self, code: int, reason: str) -> None:
        """Close the client's connection with a close code and a reason."""

    def send_text(self, text: str) -> None:
        """Queue a frame already encoded as strict JSON (one encoding for many clients)."""


class Connection:
    """A client attached to an object, with its own small state and tags.

    ``state`` is JSON (at most 16 KB encoded; assign a new dict to change it) and lives as
    long as the connection; ``tags`` group connections for ``self.connections(tag=...)``.

    Two dicts say who the client is, and they are never mixed: ``query`` holds the attach
    URL's query parameters, which the client chose (untrusted: a display name, a filter), and
    ``auth`` holds what the app's ``authorize`` returned (a dict; ``{}`` when it returned
    ``True`` or there is none), which the client cannot forge. A ``?role=admin`` lands in
    ``query``, never in ``auth``.

    ``track(key, meta)`` puts the client in the object's presence (``runtime/presence.py``);
    ``tracked`` holds its metas by key, and they leave with the connection.
    """

    __slots__ = (
        "_state", "_transport", "activation", "auth", "id", "presence_synced", "query",
        "sync_rev", "sync_view", "tags", "topic", "tracked",
    )

    def __init__(
        self,
        topic: str,
        transport: Transport,
        *,
        query: dict[str, str] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.topic = topic
        self.tags: set[str] = set()
        self.query: dict[str, str] = query or {}
        self.auth: dict[str, Any] = auth or {}
        self._state: dict[str, Any] = {}
        self._transport = transport
        self.activation: Activation | None = None
        self.tracked: dict[str, dict[str, Any]] | None = None  # presence metas by key
        self.presence_synced = False  # whether the client got objects:presence_state
        # The view of the state last sent to this client, and its rev (runtime/sync.py).
        self.sync_view: Any = None
        self.sync_rev: int | None = None

    @property
    def state(self) -> dict[str, Any]:
        """Per-connection JSON state (read it; assign a whole new dict to change it)."""
        return self._state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        size = len(to_json(value))
        if size > MAX_CONNECTION_STATE:
            raise ValueError(
                f"connection state is {size} bytes of JSON; the limit is {MAX_CONNECTION_STATE}"
            )
        self._state = value

    def send(self, event: str, payload: Any = None) -> None:
        """Send ``event`` to this client only; inside a turn, after the turn commits.

        ``ValueError`` if ``event`` starts with ``objects:`` (reserved for protocol frames).
        """
        check_event(event)
        frame = {"topic": self.topic, "event": event, "payload": payload}
        turn = self.activation.running_turn() if self.activation is not None else None
        if turn is not None:
            turn.then(lambda: self._transport.send(frame))
        else:
            self._transport.send(frame)

    def send_text(self, text: str) -> None:
        """Send a protocol frame already encoded as strict JSON text (once for every client)."""
        self._transport.send_text(text)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this client's connection."""
        self._transport.close(code, reason)

    def track(self, key: str, meta: dict[str, Any] | None = None) -> None:
        """Show this client in the object's presence under ``key`` (a user id) with ``meta``.

        Tracking the same key again updates its meta (a leave and a join, as in Phoenix).
        Inside a turn it takes effect when the turn commits. ``InvalidCall`` (or
        ``UnstorableValue``) for a key that is not a short string, or a meta that is not a
        JSON object of at most 4 KB; nothing changes then. Example::

            conn.track(conn.auth["user"], {"device": "phone"})
        """
        presence.track(self, key, meta)

    def untrack(self, key: str) -> None:
        """Take this client's meta under ``key`` out of the presence (when the turn commits)."""
        presence.untrack(self, key)

    def __repr__(self) -> str:
        return f"Connection({self.topic!r}, id={self.id[:8]}, tags={sorted(self.tags)})"
