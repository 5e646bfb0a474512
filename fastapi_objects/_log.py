"""What the package's log records say about the object they concern.

A record of the ``fastapi_objects`` logger about one object carries ``objects_type``,
``objects_key`` and ``objects_node`` (the node that logged it), for filters and formats of the
app's (``%(objects_key)s``) and for log pipelines that keep ``extra`` fields. The package
never configures logging itself: no handler, level or filter is set on any logger here.
"""

from __future__ import annotations


def about(type_name: str, key: str, node: str) -> dict[str, str]:
    """The ``extra=`` of a record about ``(type_name, key)``, logged on ``node``."""
    return {"objects_type": type_name, "objects_key": key, "objects_node": node}
