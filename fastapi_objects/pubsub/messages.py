"""What pub/sub carries: ``Message`` and its JSON encoding.

The pub/sub errors (``PubSubClosed``, ``SubscriptionOverflow``) are in the one error tree of
``fastapi_objects._exceptions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pydantic_core

logger = logging.getLogger("fastapi_objects.pubsub")


@dataclass(frozen=True, slots=True)
class Message:
    """One published event on a topic; ``payload`` is JSON-compatible."""

    topic: str
    event: str
    payload: Any
    exclude: str | None = None  # a connection id that must not receive it (the sender)
    origin: str = ""  # node id of the publisher


def encode_message(message: Message) -> bytes:
    """Encode a message as JSON (raises ``ValueError`` when the payload is not JSON-compatible)."""
    try:
        # origin first: a node drops its own messages by prefix, without decoding them.
        return pydantic_core.to_json(
            {
                "origin": message.origin,
                "topic": message.topic,
                "event": message.event,
                "payload": message.payload,
                "exclude": message.exclude,
            }
        )
    except pydantic_core.PydanticSerializationError as exc:
        where = f"{message.topic!r}/{message.event!r}"
        raise ValueError(f"the payload of {where} is not JSON-compatible: {exc}") from exc


def own_prefix(node_id: str) -> str:
    """How every message this node encodes begins (see ``encode_message``)."""
    return pydantic_core.to_json({"origin": node_id}).decode()[:-1] + ","


def decode_message(data: bytes | str) -> Message:
    """Decode what ``encode_message`` produced; ``ValueError`` for anything malformed."""
    raw = pydantic_core.from_json(data)
    if not isinstance(raw, dict):
        raise ValueError("a pub/sub message must be a JSON object")
    topic, event = raw.get("topic"), raw.get("event")
    exclude, origin = raw.get("exclude"), raw.get("origin", "")
    if not (isinstance(topic, str) and isinstance(event, str) and isinstance(origin, str)):
        raise ValueError("a pub/sub message needs string 'topic', 'event' and 'origin'")
    if exclude is not None and not isinstance(exclude, str):
        raise ValueError("'exclude' must be a string or null")
    return Message(topic, event, raw.get("payload"), exclude, origin)
