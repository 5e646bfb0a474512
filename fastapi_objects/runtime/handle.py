"""``Handle``: a typed reference to an object, through which its methods are called."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from .._exceptions import UnknownMethod

if TYPE_CHECKING:
    from .object import DurableObject
    from .runtime import Runtime

T = TypeVar("T", bound="DurableObject[Any]")


class _Handle(Generic[T]):
    """A reference to the object ``(type, key)``; its async methods call the object.

    ``await handle.increment(2)`` validates the arguments against ``Counter.increment``'s
    signature, runs the call as a turn on the object's single live instance and returns once
    the turn is durable. Handles are cheap: make one per request.
    """

    __slots__ = ("_cls", "_runtime", "key")

    def __init__(self, runtime: Runtime, cls: type[T], key: str) -> None:
        self._runtime = runtime
        self._cls = cls
        self.key = key

    @property
    def type_name(self) -> str:
        """The object's type name."""
        return self._cls.type_name

    async def call(self, method: str, args: dict[str, Any] | None = None) -> Any:
        """Call ``method`` by name with keyword ``args`` (what websocket frames do)."""
        return await self._runtime.call(self._cls, self.key, method, args or {})

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        spec = self._cls.__objects_methods__.get(name)
        if spec is None:
            raise UnknownMethod(f"{self._cls.__name__} has no callable method {name!r}")
        runtime, cls, key = self._runtime, self._cls, self.key

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await runtime.invoke(cls, key, spec, spec.validate(spec.bind(args, kwargs)))

        method.__name__ = name
        return method

    def __repr__(self) -> str:
        return f"Handle({self._cls.__name__}, {self.key!r})"


if TYPE_CHECKING:
    # For type checkers and editors a Handle[Counter] *is* a Counter, so that
    # ``await handle.increment(2)`` completes and type-checks against the real signature.
    Handle = Annotated[T, "fastapi_objects.Handle"]
else:
    Handle = _Handle
