"""The inspector: a page and a JSON API to see and steer live objects, for operators only.

``objects.inspector_router(dependencies=[Depends(require_admin)])`` mounts it (at
``/objects/inspector`` by default). It refuses to mount without dependencies unless
``public=True`` says so on purpose: it shows every object's state and edits it. Reads never
wake an object (``views.py``); edits and restores are turns on the owner (``Runtime.edit``,
``Runtime.restore``); the live view is the object's broadcasts as Server-Sent Events, which
reach every node through the pub/sub, so it neither wakes the object nor keeps it awake.
Nothing of it is part of ``objects.router``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, params

from .api import api_routes
from .pages import page_routes

if TYPE_CHECKING:
    from ..objects import Objects

log = logging.getLogger("fastapi_objects")

DEFAULT_PREFIX = "/objects/inspector"
_NAMES = ("username", "name", "email", "id", "sub")  # what names a user object, in order
_MAX_NAME = 200


def inspector_router(
    objects: Objects,
    *,
    dependencies: Sequence[params.Depends] | None = None,
    prefix: str = DEFAULT_PREFIX,
    public: bool = False,
) -> APIRouter:
    """The inspector's router: its page, its JSON API and their assets, behind ``dependencies``.

    ``dependencies`` guard every route (the page, the API, the live view); the first of
    them that returns a name (a ``str``, or an object's ``username``, ``name``, ``email``,
    ``id`` or ``sub``) is who made an edit or a restore, in the journal.
    """
    guards = list(dependencies or ())
    if not guards and not public:
        raise ValueError(
            "objects.inspector_router() will not mount unprotected: it shows and edits every "
            "object. Pass dependencies=[Depends(require_admin)] (your own admin check), or "
            "public=True to mount it without one on purpose (a local development app)"
        )
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start with / and not end with one, e.g. {DEFAULT_PREFIX}")
    if not guards:
        log.warning("the objects inspector at %s is mounted without protection (public=True): "
                    "anyone who reaches it can read and edit every object", prefix)
    router = APIRouter(prefix=prefix, dependencies=guards)
    router.include_router(api_routes(objects, _who(guards)))
    router.include_router(page_routes(objects, prefix))
    return router


def _who(guards: Sequence[params.Depends]) -> Callable[..., str | None]:
    """A dependency naming who makes a request: what the guards returned (run once, cached).

    FastAPI caches each dependency's value for the request, so asking for the guards again
    here reuses what they returned when they let the request in.
    """

    def who(**returned: Any) -> str | None:
        for value in returned.values():
            name = _name(value)
            if name:
                return name
        return None

    who.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(f"guard{i}", inspect.Parameter.KEYWORD_ONLY, default=guard)
        for i, guard in enumerate(guards)
    ])
    return who


def _name(value: Any) -> str | None:
    """A short name for a guard's return value; never the whole object (it may hold secrets)."""
    if isinstance(value, str):
        return value[:_MAX_NAME] or None
    for attr in _NAMES:
        found = value.get(attr) if isinstance(value, dict) else getattr(value, attr, None)
        if isinstance(found, str | int) and not isinstance(found, bool) and str(found):
            return str(found)[:_MAX_NAME]
    return None
