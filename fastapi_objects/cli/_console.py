"""Where the commands print their tables (rich is imported only by commands that print one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PIPED_WIDTH = 1_000
"""Columns of a console that is not a terminal: wide enough that no cell is cut."""


def console() -> Console:
    """A console of the terminal's width; when piped, wide enough to print whole cells.

    Rich assumes 80 columns without a terminal, and cuts cells to fit: addresses and node ids
    read through ``| grep`` or ``fly ssh console -C "objects nodes"`` would lose their ends.
    """
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out = Console(width=PIPED_WIDTH)
    return out
