"""The package logger, and the one start-up line an operator must see."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("fastapi_objects")


def announce(message: str, *args: Any) -> None:
    """Log ``message`` at INFO where it will be seen.

    A library's INFO lines go nowhere unless the app configured logging (uvicorn configures
    only its own loggers): then this logger gets a stderr handler of its own, formatted like
    uvicorn's lines, so "which database is this app using" is always answered at start.
    """
    if not log.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
    log.info(message, *args)
