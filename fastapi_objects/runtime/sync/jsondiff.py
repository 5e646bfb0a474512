"""The RFC 6902 JSON Patch from one JSON document to another, made for state sync.

``diff(old, new)`` walks both documents once and writes only ``add``, ``remove`` and
``replace`` operations: objects key by key, arrays by their common head and tail (an
append, a prepend or a removal in the middle is one operation, whatever the array's
length) and what is left between them by matching items (``difflib``), scalars by type and
value (``true`` is not ``1``). ``jsonpatch.make_patch`` makes
patches of the same meaning but took 170-400 us for one changed field of a 100-field object
and 37 ms for one item appended to a 10,000-item array (``docs/state-sync.md``); this runs
after every commit of a synced object, so it has to be cheap. The tests check every patch it
makes by applying it with ``jsonpatch``.

Example::

    diff({"a": 1, "l": [1, 2]}, {"a": 2, "l": [1, 2, 3]})
    # [{"op": "replace", "path": "/a", "value": 2}, {"op": "add", "path": "/l/2", "value": 3}]
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

from pydantic_core import to_json

Patch = list[dict[str, Any]]
_MATCHED = 250_000  # past this many item pairs left to match, items are diffed by index


def diff(old: Any, new: Any) -> Patch:
    """The operations that turn the JSON document ``old`` into ``new`` (``[]``: the same)."""
    ops: Patch = []
    _diff(old, new, "", ops)
    return ops


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON: ``1 == True == 1.0`` in Python, but ``true`` and ``1`` are not.

    Python's ``==`` (C speed) decides first; for equal containers, which could still hide
    ``true`` against ``1`` inside, their JSON texts (Rust speed) decide.
    """
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b) or a != b:
        return False
    return (kind is not dict and kind is not list) or to_json(a) == to_json(b)


def _diff(old: Any, new: Any, path: str, ops: Patch) -> None:
    if _same(old, new):
        return
    kind = type(new)
    if kind is dict and type(old) is dict:
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": path + "/" + _escape(key)})
        for key, value in new.items():
            if key in old:
                was = old[key]
                kind = type(value)
                if was is value or (
                    type(was) is kind and kind is not dict and kind is not list and was == value
                ):
                    continue  # the common case, without a call: an unchanged scalar
                _diff(was, value, path + "/" + _escape(key), ops)
            else:
                ops.append({"op": "add", "path": path + "/" + _escape(key), "value": value})
    elif kind is list and type(old) is list:
        _diff_list(old, new, path, ops)
    else:
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_list(old: list[Any], new: list[Any], path: str, ops: Patch) -> None:
    """Keep the common head and tail; diff what is left item by item, then add or remove."""
    n, m = len(old), len(new)
    shortest = min(n, m)
    # An append (or a removal at the end) first, in one comparison of the slices.
    if _same(old[:shortest], new[:shortest]):
        head = shortest
    else:
        head = 0
        while head < shortest and _same(old[head], new[head]):
            head += 1
    tail = 0
    if head < shortest and _same(old[n - shortest + head:], new[m - shortest + head:]):
        tail = shortest - head  # a prepend (or a removal at the start)
    while tail < shortest - head and _same(old[n - 1 - tail], new[m - 1 - tail]):
        tail += 1
    old_mid, new_mid = old[head:n - tail], new[head:m - tail]
    if len(old_mid) * len(new_mid) > _MATCHED or not old_mid or not new_mid:
        _diff_by_index(old_mid, new_mid, head, path, ops)
        return
    # What is left: matched item by item (by their JSON), so an insert and a removal far apart
    # cost one operation each instead of a replace of every item between them.
    matcher = SequenceMatcher(None, [to_json(x) for x in old_mid], [to_json(x) for x in new_mid],
                              autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":  # the document holds new_mid[:j1] + old_mid[i1:] here
            _diff_by_index(old_mid[i1:i2], new_mid[j1:j2], head + j1, path, ops)


def _diff_by_index(old: list[Any], new: list[Any], at: int, path: str, ops: Patch) -> None:
    """``old`` (at index ``at``) into ``new``: item by item, then removes or adds the rest."""
    both = min(len(old), len(new))
    for i in range(both):
        _diff(old[i], new[i], f"{path}/{at + i}", ops)
    start = at + both
    ops.extend({"op": "remove", "path": f"{path}/{start}"} for _ in range(len(old) - both))
    ops.extend({"op": "add", "path": f"{path}/{start + i}", "value": new[both + i]}
               for i in range(len(new) - both))


def _escape(key: str) -> str:
    """A key as one JSON Pointer token (RFC 6901: ``~`` is ``~0``, ``/`` is ``~1``)."""
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key
