"""State sync's names and frames: encoded once, as JSON text, for every client they go to."""

from __future__ import annotations

from pydantic_core import to_json

STATE = "objects:state"
"""Server -> client: ``{"rev", "state", "run"}``, the client's whole view."""
STATE_PATCH = "objects:state_patch"
"""Server -> client: ``{"rev", "base", "patch"}``, an RFC 6902 patch from ``base`` to ``rev``."""
STATE_REQUEST = "objects:state_request"
"""Client -> server: send me the whole view (a frame ``{"event": "objects:state_request"}``)."""
INVALID_REV = "invalid_rev"
"""Error type: ``objects_rev`` in the attach URL is not a revision (the whole view follows)."""
REV_PARAM = "objects_rev"
"""The attach URL's query parameter carrying the rev a reconnecting client holds."""
RUN_PARAM = "objects_run"
"""The attach URL's query parameter carrying the ``run`` of the view that client holds."""
HISTORY = 64
"""Most patches of the shared view kept per object for resumes (and at most ``HISTORY_CHARS``)."""
HISTORY_CHARS = 256 * 1024
"""Most characters of JSON those patches may hold together."""

MAX_REV = 2**53
"""The largest ``objects_rev`` taken: the largest integer a browser's JSON keeps exactly."""


def frame(topic: str, event: str, payload: str) -> str:
    """The text of ``{"topic", "event", "payload"}`` around a payload already encoded."""
    return f'{{"topic":{to_json(topic).decode()},"event":"{event}","payload":{payload}}}'


def state_payload(rev: int, view: str, run: str) -> str:
    """``objects:state``'s payload around the view's JSON."""
    return f'{{"rev":{rev},"state":{view},"run":"{run}"}}'


def patch_payload(rev: int, base: int, patch: str) -> str:
    """``objects:state_patch``'s payload around the patch's JSON."""
    return f'{{"rev":{rev},"base":{base},"patch":{patch}}}'


def error_frame(type: str, message: str) -> str:
    """An error frame that answers no call: ``{"ref": null, "ok": false, "error"}``."""
    return to_json({"ref": None, "ok": False, "error": {"type": type, "message": message}}
                   ).decode()
