"""``PMap``: a persistent map, for event-sourced state that changes a key at a time.

An event-sourced object's ``apply`` must leave the old state intact (the runtime goes back to
it when a turn raises), so a state holding a ``dict`` of N entries has to copy all N for every
event. A ``PMap`` spreads its entries over 256 small dicts by hash: ``set`` and ``delete`` copy
one of them and the tuple that holds them, about N/256 entries instead of N, and share the rest
with the map they came from. Pydantic validates and serializes it as a plain ``dict`` (the
stored JSON does not change).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar, get_args, overload

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_MASK = 255
_EMPTY: dict[Any, Any] = {}  # the bucket of every empty slot; never written to


class PMap(Mapping[K, V], Generic[K, V]):
    """An immutable mapping whose ``set``/``delete`` return a new map sharing most of this one.

    Example::

        a = PMap({"x": 1})
        b = a.set("y", 2)  # a is unchanged: {"x": 1}; b is {"x": 1, "y": 2}
    """

    __slots__ = ("_buckets", "_len")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        buckets: list[dict[K, V]] = [_EMPTY] * (_MASK + 1)
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            i = hash(key) & _MASK
            bucket = buckets[i]
            if bucket is _EMPTY:
                bucket = buckets[i] = {}
            bucket[key] = value
        self._buckets: tuple[dict[K, V], ...] = tuple(buckets)
        self._len = sum(len(b) for b in buckets)

    @classmethod
    def _of(cls, buckets: tuple[dict[K, V], ...], length: int) -> PMap[K, V]:
        new = cls.__new__(cls)
        new._buckets, new._len = buckets, length
        return new

    def __getitem__(self, key: K) -> V:
        return self._buckets[hash(key) & _MASK][key]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, /, default: V | T) -> V | T: ...

    def get(self, key: K, /, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._buckets[hash(key) & _MASK].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets[hash(key) & _MASK]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        for bucket in self._buckets:
            yield from bucket

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PMap):
            return self._len == other._len and self.to_dict() == other.to_dict()
        return isinstance(other, Mapping) and self.to_dict() == dict(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like dict

    def __repr__(self) -> str:
        return f"PMap({self.to_dict()!r})"

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A map with ``key`` set to ``value``; this one is unchanged."""
        i = hash(key) & _MASK
        old = self._buckets[i]
        bucket = dict(old)
        bucket[key] = value
        buckets = list(self._buckets)
        buckets[i] = bucket
        return self._of(tuple(buckets), self._len + (key not in old))

    def delete(self, key: K) -> PMap[K, V]:
        """A map without ``key`` (this one when it has no such key); this one is unchanged."""
        i = hash(key) & _MASK
        old = self._buckets[i]
        if key not in old:
            return self
        bucket = dict(old)
        del bucket[key]
        buckets = list(self._buckets)
        buckets[i] = bucket if bucket else _EMPTY
        return self._of(tuple(buckets), self._len - 1)

    def to_dict(self) -> dict[K, V]:
        """A plain ``dict`` of the entries (a copy)."""
        out: dict[K, V] = {}
        for bucket in self._buckets:
            if bucket:
                out.update(bucket)
        return out

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validated from, and serialized as, a ``dict`` of the type's key and value types."""
        key, value = get_args(source) or (Any, Any)
        as_dict = handler.generate_schema(dict[key, value])  # type: ignore[valid-type]
        return core_schema.no_info_after_validator_function(
            cls,
            as_dict,
            serialization=core_schema.plain_serializer_function_ser_schema(
                cls.to_dict, return_schema=as_dict
            ),
        )
