"""fastapi_objects: Durable Objects for FastAPI and Starlette.

Keyed, singleton, durable objects whose calls run one turn at a time and commit before they
answer; browsers attach over websockets and get live broadcasts; idle objects hibernate to
the database and thaw on the next call. See README.md for the whole story.
"""

from __future__ import annotations

from ._exceptions import (
    CallTimeout,
    ConflictError,
    ConnectionRejected,
    CorruptState,
    InvalidArguments,
    InvalidCall,
    InvalidKey,
    MissingDependency,
    ObjectNotFound,
    ObjectsError,
    Overloaded,
    StorageUnavailable,
    UnknownMethod,
    UnknownObjectType,
)
from .fastapi import Objects, get_object
from .pubsub import Message, SubscriptionOverflow
from .runtime import DurableObject, EventSourced, Handle, Runtime, RuntimeStats, readonly
from .runtime.connection import Connection

__version__ = "0.1.0"

__all__ = [
    "CallTimeout",
    "ConflictError",
    "Connection",
    "ConnectionRejected",
    "CorruptState",
    "DurableObject",
    "EventSourced",
    "Handle",
    "InvalidArguments",
    "InvalidCall",
    "InvalidKey",
    "Message",
    "MissingDependency",
    "ObjectNotFound",
    "Objects",
    "ObjectsError",
    "Overloaded",
    "Runtime",
    "RuntimeStats",
    "StorageUnavailable",
    "SubscriptionOverflow",
    "UnknownMethod",
    "UnknownObjectType",
    "get_object",
    "readonly",
]
