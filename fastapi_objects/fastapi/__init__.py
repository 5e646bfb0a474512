"""The FastAPI/Starlette integration: ``Objects``, ``get_object``, websockets. It knows no SQL."""

from __future__ import annotations

from .dependencies import get_object, objects_of
from .objects import Objects

__all__ = ["Objects", "get_object", "objects_of"]
