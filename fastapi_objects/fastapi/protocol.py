"""The websocket protocol's names and its strict JSON: what a client may rely on (DESIGN §3).

Every frame the server sends is strict JSON (``JSON.parse`` in a browser accepts it): NaN and
±Infinity are refused on the way in (``decode_frame``) and never written (``encode_frame``).

Close codes (``CloseCode``)::

    1000 NORMAL            the session ended
    1011 ATTACH_FAILED     storage unreachable, or on_connect raised (the reason carries an id)
    1012 RELOADED          the object's instance was dropped (fenced out); reconnect
    1013 TOO_MANY_CLIENTS  the object has max_connections clients already
    4400 INVALID_KEY       the key in the URL is not a valid key
    4401 UNAUTHORIZED      ``authorize`` said no
    4403 FORBIDDEN         the type is not public, the Origin is not allowed, or on_connect
                           rejected the client
    4404 UNKNOWN_TYPE      no object type of that name
    4408 TOO_SLOW          the client fell ``max_outbox`` frames or ``max_outbox_bytes``
                           behind, or did not take a frame within ``send_timeout``

Codes 4400-4499 other than 4408 are refusals: retrying the same attach cannot help.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic_core import from_json

from ..runtime.connection import RESERVED_EVENT_PREFIX, CloseCode
from ..runtime.presence import PRESENCE_DIFF, PRESENCE_STATE
from ..runtime.storable import strict_json
from ..runtime.sync import INVALID_REV, REV_PARAM, RUN_PARAM, STATE, STATE_PATCH, STATE_REQUEST

__all__ = [
    "ATTACHED",
    "FORBIDDEN",
    "FRAME_TOO_LARGE",
    "INTERNAL_ERROR",
    "INVALID_FRAME",
    "PRESENCE_DIFF",
    "PRESENCE_STATE",
    "INVALID_REV",
    "RESERVED_EVENT_PREFIX",
    "REV_PARAM",
    "RUN_PARAM",
    "STATE",
    "STATE_PATCH",
    "STATE_REQUEST",
    "CloseCode",
    "decode_frame",
    "encode_frame",
]

ATTACHED = RESERVED_EVENT_PREFIX + "attached"
"""The event of a client's first frame once attached: ``{"topic", "event", "payload":
{"connection": id}}``. Every broadcast committed after it was sent reaches the client. It
holds ``"presence": true`` when ``PRESENCE_STATE`` follows (the object's presence is in use);
without it, the presence is empty until a state arrives, just before the first diff."""

INVALID_FRAME = "invalid_frame"
"""Error type: the frame is not JSON, not an object, or not a call/event of the right shape."""

FORBIDDEN = "forbidden"
"""Error type: the frame calls a method that is not ``@client_callable``; nothing ran."""

FRAME_TOO_LARGE = "frame_too_large"
"""Error type: the frame is over ``max_frame_bytes``."""

INTERNAL_ERROR = "internal_error"
"""Error type: the server's or the app's code failed; the message is ``internal error <id>``
and the log holds the traceback under that id."""


def encode_frame(frame: dict[str, Any]) -> str:
    """The strict JSON text of ``frame``.

    ``ValueError`` when it holds NaN or ±Infinity, or anything that is not JSON-compatible.
    """
    return strict_json(frame, "the frame")


def decode_frame(text: str) -> Any:
    """Parse a client frame as strict JSON: ``ValueError`` for bad JSON or non-finite numbers.

    ``NaN``/``Infinity`` literals are not JSON; a number too large for a double (``1e400``)
    would become one, so it is refused too.
    """
    value = from_json(text, allow_inf_nan=False)
    if _has_non_finite(value):
        raise ValueError("a number is too large to be finite (JSON numbers must fit a double)")
    return value


def _has_non_finite(value: Any) -> bool:
    # Iterative: from_json bounds the depth, but a recursion here need not depend on that.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
