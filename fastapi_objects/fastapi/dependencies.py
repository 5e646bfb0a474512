"""``get_object``: the FastAPI dependency that hands a route a ``Handle``."""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Path
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute

from ..runtime import DurableObject, Handle
from ..runtime.keys import KEY_REGEX, MAX_KEY_LENGTH
from .fly import REPLAY_STATUS, replay_target

if TYPE_CHECKING:
    from .objects import Objects

T = TypeVar("T", bound=DurableObject[Any])
KeySource = str | Callable[[HTTPConnection], "str | Awaitable[str]"]

# One dependency per (class, key source): FastAPI caches by identity, and tests can write
# app.dependency_overrides[get_object(Counter)] = ...
_DEPENDENCIES: dict[tuple[type[Any], KeySource], Callable[..., Any]] = {}
# The path parameter each key-from-the-path dependency reads, for check_routes.
_PATH_KEYS: dict[Callable[..., Any], str] = {}

# What the path parameter declares in /openapi.json. Declared, not enforced by FastAPI:
# validate_key checks the same rule, so a bad key stays the 400 `invalid_key` every other
# way of passing a key gets (tests/test_keys.py pins that the two agree).
_KEY_SCHEMA = {"pattern": KEY_REGEX, "minLength": 1, "maxLength": MAX_KEY_LENGTH}
_KEYWORD = inspect.Parameter.KEYWORD_ONLY
_RESERVED = {"connection", *keyword.kwlist}


def get_object(cls: type[T], key: KeySource = "key") -> Callable[..., Awaitable[Handle[T]]]:
    """A dependency returning ``Handle[cls]`` for the key in the path parameter named ``key``.

    The path parameter is declared to FastAPI (a ``str`` with the key rule as its pattern and
    lengths), so ``/openapi.json`` and Swagger UI show it. ``key`` may instead be a callable
    taking the request (sync or async), e.g. to key a ``Cart`` by the session's user. The same
    arguments return the same dependency, so ``app.dependency_overrides[get_object(Counter)]``
    works.

    Example::

        @app.post("/counters/{key}/increment")
        async def increment(counter: Annotated[Handle[Counter], Depends(get_object(Counter))]):
            return {"value": await counter.increment()}
    """
    found = _DEPENDENCIES.get((cls, key))
    if found is not None:
        return found
    dependency = _from_source(cls, key) if callable(key) else _from_path(cls, key)
    dependency.__name__ = f"get_{cls.__name__}"
    dependency.__qualname__ = dependency.__name__
    _DEPENDENCIES[(cls, key)] = dependency
    return dependency


def _from_path(cls: type[T], name: str) -> Callable[..., Awaitable[Handle[T]]]:
    # FastAPI reads parameters from the signature: declare one named after the path parameter,
    # through an alias when that name cannot be a Python parameter (`{class}`).
    param = name if name.isidentifier() and name not in _RESERVED else "key"

    async def dependency(connection: HTTPConnection, **path: str) -> Handle[T]:
        return _handle(connection, cls, path[param])

    declared = Annotated[
        str,
        Path(
            alias=None if param == name else name,
            description=f"The {cls.type_name} object's key.",
            json_schema_extra=_KEY_SCHEMA,
        ),
    ]
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("connection", _KEYWORD, annotation=HTTPConnection),
            inspect.Parameter(param, _KEYWORD, annotation=declared),
        ]
    )
    _PATH_KEYS[dependency] = name
    return dependency


def _from_source(
    cls: type[T], source: Callable[[HTTPConnection], str | Awaitable[str]]
) -> Callable[..., Awaitable[Handle[T]]]:
    async def dependency(connection: HTTPConnection) -> Handle[T]:
        value = source(connection)
        if inspect.isawaitable(value):
            value = await value
        return _handle(connection, cls, value)

    return dependency


def _handle(connection: HTTPConnection, cls: type[T], key: str) -> Handle[T]:
    objects = objects_of(connection)
    if objects.runtime.types.get(cls.type_name) is not cls:
        raise RuntimeError(
            f"get_object({cls.__name__}): {cls.__name__} is not registered in "
            "Objects(objects=[...])"
        )
    handle = objects.get(cls, key)  # validates the key: InvalidKey is a 400
    if objects.settings.fly_replay:
        target = replay_target(objects, cls, key, connection.headers)
        if target is not None:  # Fly's proxy replays the request on the owner's machine
            raise HTTPException(
                REPLAY_STATUS, f"replayed to the object's owner: {target}",
                headers={"fly-replay": target},
            )
    return handle


def check_routes(routes: Iterable[BaseRoute]) -> None:
    """Raise ``RuntimeError`` naming each route whose path lacks the key ``get_object`` reads.

    FastAPI would answer such a route with a 422 about a missing path parameter, blaming the
    client for the app's mistake; checked at start-up, it is the developer's error at once.
    """
    problems = []
    for route in routes:
        dependant: Dependant | None = getattr(route, "dependant", None)
        if dependant is None or not isinstance(route, APIRoute | APIWebSocketRoute):
            continue
        for dep in _walk(dependant):
            name = _PATH_KEYS.get(dep.call) if dep.call is not None else None
            if name is not None and name not in route.param_convertors:
                methods = ",".join(sorted(getattr(route, "methods", None) or {"WEBSOCKET"}))
                problems.append(f"{methods} {route.path} has no path parameter {{{name}}}")
    if problems:
        raise RuntimeError(
            "get_object(...) reads the key from a path parameter the route does not have: "
            + "; ".join(problems)
            + " (add it to the path, or pass key= the parameter's name or a callable)"
        )


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    for dep in dependant.dependencies:
        yield dep
        yield from _walk(dep)


def objects_of(connection: HTTPConnection) -> Objects:
    """The ``Objects`` runtime of the app serving ``connection``."""
    objects = getattr(connection.app.state, "objects", None)
    if objects is None:
        raise RuntimeError(
            "app.state.objects is not set: create the app with FastAPI(lifespan=objects.lifespan)"
        )
    return objects  # type: ignore[no-any-return]
