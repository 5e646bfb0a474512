"""``python -m fastapi_objects.cli``: the ``objects`` command."""

from __future__ import annotations

from . import main

main()
