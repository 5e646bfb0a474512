"""``get_object``: the FastAPI dependency that hands a route a ``Handle``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import HTTPConnection

from ..runtime import DurableObject, Handle

if TYPE_CHECKING:
    from .objects import Objects

T = TypeVar("T", bound=DurableObject[Any])
KeySource = str | Callable[[HTTPConnection], "str | Awaitable[str]"]

# One dependency per (class, key source): FastAPI caches by identity, and tests can write
# app.dependency_overrides[get_object(Counter)] = ...
_DEPENDENCIES: dict[tuple[type[Any], KeySource], Callable[..., Any]] = {}


def get_object(cls: type[T], key: KeySource = "key") -> Callable[..., Awaitable[Handle[T]]]:
    """A dependency returning ``Handle[cls]`` for the key in the path parameter named ``key``.

    ``key`` may instead be a callable taking the request (sync or async), e.g. to key a
    ``Cart`` by the session's user. The same arguments return the same dependency, so
    ``app.dependency_overrides[get_object(Counter)]`` works.

    Example::

        @app.post("/counters/{key}/increment")
        async def increment(counter: Annotated[Handle[Counter], Depends(get_object(Counter))]):
            return {"value": await counter.increment()}
    """
    found = _DEPENDENCIES.get((cls, key))
    if found is not None:
        return found

    async def dependency(connection: HTTPConnection) -> Handle[T]:
        value: Any
        if callable(key):
            value = key(connection)
            if inspect.isawaitable(value):
                value = await value
        else:
            value = connection.path_params.get(key)
            if value is None:  # the app's mistake, not the client's: a 500 that says so
                raise RuntimeError(
                    f"get_object({cls.__name__}): the route has no path parameter {key!r}"
                )
        objects = objects_of(connection)
        if objects.types.get(cls.type_name) is not cls:
            raise RuntimeError(
                f"get_object({cls.__name__}): {cls.__name__} is not registered in "
                "Objects(objects=[...])"
            )
        return objects.get(cls, value)

    dependency.__name__ = f"get_{cls.__name__}"
    _DEPENDENCIES[(cls, key)] = dependency
    return dependency


def objects_of(connection: HTTPConnection) -> Objects:
    """The ``Objects`` runtime of the app serving ``connection``."""
    objects = getattr(connection.app.state, "objects", None)
    if objects is None:
        raise RuntimeError(
            "app.state.objects is not set: create the app with FastAPI(lifespan=objects.lifespan)"
        )
    return objects  # type: ignore[no-any-return]
