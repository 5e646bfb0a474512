"""What waits to leave for one client: frames bounded in number and in size.

A client that stops reading must not make the server hold its frames without limit: the
network pushes back, frames pile up here, and past ``max_outbox`` frames or
``max_outbox_bytes`` characters of JSON text the session closes the client as too slow (4408),
dropping what was queued. A frame the network does not take within ``send_timeout`` seconds
does the same (``session.py``).
"""

from __future__ import annotations

from collections import deque

from ..pubsub import Message
from .errors import internal_error
from .protocol import encode_frame


class Outbox:
    """A queue of encoded frames, with the ``None`` that ends it always fitting.

    Nothing waits on it: its ``Writer`` (``writer.py``) is woken when frames arrive.
    """

    __slots__ = ("_frames", "max_frames", "max_size", "size")

    def __init__(self, max_frames: int, max_size: int) -> None:
        self.max_frames = max_frames
        self.max_size = max_size
        self.size = 0  # characters queued
        self._frames: deque[str | None] = deque()

    def put(self, text: str) -> bool:
        """Queue ``text``; ``False`` (nothing queued) when it would go over a limit."""
        if len(self._frames) >= self.max_frames or self.size + len(text) > self.max_size:
            return False
        self.size += len(text)
        self._frames.append(text)
        return True

    def end(self, *, drop: bool) -> None:
        """End the queue after what it holds, or (``drop``) in place of it."""
        if drop:
            self._frames.clear()
            self.size = 0
        self._frames.append(None)

    @property
    def empty(self) -> bool:
        """Whether nothing waits to be sent."""
        return not self._frames

    def take(self) -> str | None:
        """The next frame, or ``None`` once the queue was ended (only when not ``empty``)."""
        text = self._frames.popleft()
        if text is not None:
            self.size -= len(text)
        return text


_last_broadcast: tuple[Message | None, str] = (None, "")


def encode_broadcast(message: Message) -> str:
    """The frame of a broadcast, encoded once for all the clients it goes to.

    Fan-out hands the same ``Message`` to every client of a topic. The cache is read once into
    a local: runtimes in other threads (several servers in one process) share it, and a second
    read could return another thread's frame.
    """
    global _last_broadcast
    cached, text = _last_broadcast
    if cached is not message:
        frame = {"topic": message.topic, "event": message.event, "payload": message.payload}
        try:
            text = encode_frame(frame)
        except ValueError as exc:
            # Already committed and published: the clients hear that a frame was refused.
            error = internal_error(exc, f"broadcast {message.topic!r}/{message.event!r}")
            text = encode_frame({"ref": None, "ok": False, "error": error})
        _last_broadcast = (message, text)
    return text
