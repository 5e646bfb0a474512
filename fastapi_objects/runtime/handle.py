"""``Handle``: a typed reference to an object, through which its methods are called."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from .methods import method_spec

if TYPE_CHECKING:
    from .calls import Calls
    from .methods import MethodSpec
    from .object import DurableObject

T = TypeVar("T", bound="DurableObject[Any]")


class _Handle(Generic[T]):
    """A reference to the object ``(type, key)``; its async methods call the object.

    ``await handle.increment(2)`` validates the arguments against ``Counter.increment``'s
    signature, runs the call as a turn on the object's single live instance and returns once
    the turn is durable. Handles are cheap: make one per request. Each object class gets a
    handle class of its own whose methods are the object's (``handle_class``).
    """

    __slots__ = ("_calls", "_cls", "key")

    def __init__(self, calls: Calls, cls: type[T], key: str) -> None:
        self._calls = calls
        self._cls = cls
        self.key = key

    @property
    def type_name(self) -> str:
        """The object's type name."""
        return self._cls.type_name

    async def call(self, method: str, args: dict[str, Any] | None = None) -> Any:
        """Call ``method`` by name with keyword ``args`` (what websocket frames do)."""
        spec = method_spec(self._cls, method)
        return await self._calls.invoke(self._cls, self.key, spec, spec.validate(args or {}))

    def __getattr__(self, name: str) -> Any:
        method_spec(self._cls, name)  # raises UnknownMethod (a real method is found before)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"Handle({self._cls.__name__}, {self.key!r})"


def handle_class(cls: type[DurableObject[Any]]) -> type[_Handle[Any]]:
    """The handle class of ``cls``: a method per callable method of the object.

    Real methods, not ``__getattr__``: ``handle.increment`` is a plain attribute lookup, with
    no closure made per call. A method named like a handle's own attribute (``call``,
    ``key``, ``type_name``) stays reachable through ``handle.call(name, args)``.
    """
    namespace: dict[str, Any] = {"__slots__": ()}
    for name, spec in cls.__objects_methods__.items():
        if not hasattr(_Handle, name):
            namespace[name] = _method(cls, spec)
    return type(f"Handle[{cls.__name__}]", (_Handle,), namespace)


def _method(cls: type[DurableObject[Any]], spec: MethodSpec) -> Callable[..., Awaitable[Any]]:
    async def method(self: _Handle[Any], *args: Any, **kwargs: Any) -> Any:
        valid = spec.validate(spec.bind(args, kwargs))
        return await self._calls.invoke(cls, self.key, spec, valid)

    method.__name__ = method.__qualname__ = spec.name
    method.__doc__ = spec.fn.__doc__
    return method


if TYPE_CHECKING:
    # For type checkers and editors a Handle[Counter] *is* a Counter, so that
    # ``await handle.increment(2)`` completes and type-checks against the real signature.
    Handle = Annotated[T, "fastapi_objects.Handle"]
else:
    Handle = _Handle
