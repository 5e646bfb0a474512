"""Callable methods of an object: discovery, argument validation, result encoding."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_type_hints

import pydantic
from pydantic_core import to_jsonable_python

from .._exceptions import InvalidArguments, UnknownMethod

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Names on DurableObject that are hooks or helpers, never remote-callable methods.
RESERVED = frozenset({
    "on_activate", "on_hibernate", "on_connect", "on_message", "on_disconnect",
    "migrate_state", "apply", "record", "emit", "broadcast", "connections", "on_alarm",
    "set_alarm", "cancel_alarm", "alarms", "delete",
})


def readonly(fn: F) -> F:
    """Mark a method read-only: it may run concurrently with other read-only calls.

    A read-only method must not change ``self.state``; its result still waits for the commit
    of any earlier turn whose state it could have seen (the output gate).

    Example::

        @readonly
        async def get(self) -> int:
            return self.state.value
    """
    fn.__objects_readonly__ = True  # type: ignore[attr-defined]
    return fn


def client_callable(fn: F) -> F:
    """Let websocket clients call this method (server code calls any method anyway).

    A client frame ``{"ref", "call": name, "args"}`` may run only methods marked so, on types
    with ``public = True``; any other is refused with a ``forbidden`` error frame and runs
    nothing. Combines with ``@readonly`` in either order.

    Example::

        @client_callable
        async def increment(self, by: int = 1) -> int:
            self.state.value += by
            return self.state.value
    """
    fn.__objects_client_callable__ = True  # type: ignore[attr-defined]
    return fn


class MethodSpec:
    """How to call one method: its parameters, validator and result encoder.

    ``readonly`` and ``client_callable`` are what its decorators said.
    """

    __slots__ = (
        "_result", "_validate", "_validator", "client_callable", "fn", "name", "params",
        "readonly",
    )

    def __init__(self, owner: type, name: str, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn
        self.name = name
        self.readonly: bool = getattr(fn, "__objects_readonly__", False)
        self.client_callable: bool = getattr(fn, "__objects_client_callable__", False)
        signature = inspect.signature(fn)
        hints = get_type_hints(fn, include_extras=True)
        fields: dict[str, Any] = {}
        params = []
        for param in list(signature.parameters.values())[1:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(
                    f"{owner.__name__}.{name}: *args and **kwargs cannot be called remotely"
                )
            annotation = hints.get(param.name, Any)
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, default)
            params.append(param.name)
        self.params = tuple(params)
        self._validator: type[pydantic.BaseModel] | None = (
            pydantic.create_model(
                f"{owner.__name__}.{name}",
                __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                **fields,
            )
            if fields
            else None
        )
        # The model's core validator, called directly: half the cost of model_validate.
        self._validate = (
            self._validator.__pydantic_validator__.validate_python if self._validator else None
        )
        returns = hints.get("return", Any)
        self._result = pydantic.TypeAdapter(returns) if returns not in (Any, None) else None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map positional and keyword arguments to parameter names."""
        if not args:
            return kwargs
        if len(args) > len(self.params):
            raise InvalidArguments(
                f"{self.name}() takes {len(self.params)} arguments, {len(args)} were given"
            )
        bound = dict(zip(self.params, args, strict=False))
        for name in kwargs:
            if name in bound:
                raise InvalidArguments(f"{self.name}() got two values for argument {name!r}")
        bound.update(kwargs)
        return bound

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate arguments against the signature; raise ``InvalidArguments``."""
        if self._validate is None:
            if args:
                raise InvalidArguments(
                    f"{self.name}() takes no arguments; got {', '.join(sorted(args))}"
                )
            return args
        if not isinstance(args, dict):
            raise InvalidArguments(f"{self.name}(): arguments must be an object of name: value")
        try:
            model = self._validate(args)
        except pydantic.ValidationError as exc:
            raise InvalidArguments(f"{self.name}(): {describe_errors(exc)}") from None
        return model.__dict__  # type: ignore[no-any-return]  # the fields, by name (a fresh dict)

    def encode_result(self, result: Any) -> Any:
        """Turn a method's result into JSON-compatible data."""
        if self._result is not None:
            return self._result.dump_python(result, mode="json")
        return to_jsonable_python(result)

    def decode_result(self, data: Any) -> Any:
        """The inverse of ``encode_result``: what a forwarded call returns, as a local one would."""
        if self._result is not None:
            return self._result.validate_python(data)
        return data


def method_spec(cls: Any, name: str) -> MethodSpec:
    """The callable method ``name`` of the object class ``cls``, or ``UnknownMethod``."""
    spec: MethodSpec | None = cls.__objects_methods__.get(name)
    if spec is None:
        raise UnknownMethod(f"{cls.__name__} has no callable method {name!r}")
    return spec


def discover(owner: type, base: type) -> dict[str, MethodSpec]:
    """Find the public ``async def`` methods of ``owner`` that ``base`` does not define."""
    specs: dict[str, MethodSpec] = {}
    for name in dir(owner):
        if name.startswith("_") or name in RESERVED or hasattr(base, name):
            continue
        fn = inspect.getattr_static(owner, name)
        if isinstance(fn, staticmethod | classmethod) or not inspect.iscoroutinefunction(fn):
            continue
        specs[name] = MethodSpec(owner, name, fn)
    return specs


def describe_errors(
    exc: pydantic.ValidationError, whole: str = "arguments", most: int | None = None
) -> str:
    """A validation error in one line: ``where: what`` for each problem (``most`` of them)."""
    parts = []
    for error in exc.errors(include_url=False)[:most]:
        where = ".".join(str(p) for p in error["loc"]) or whole
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
