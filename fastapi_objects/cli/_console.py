"""Where the commands print their tables (rich is imported only by commands that print one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PIPED_WIDTH = 1_000
"""Columns of a console that is not a terminal: wide enough that no cell is cut."""


def console() -> Console:
    """A console that prints text as it is, as wide as the terminal or, when piped, wider.

    Stored text is never markup: rich would eat ``[fdaa::2]`` of an IPv6 address and ``[true]``
    of a state as style tags, and turn ``:smile:`` of a key into an emoji. And rich assumes 80
    columns without a terminal, cutting cells to fit: addresses and node ids read through
    ``| grep`` or ``fly ssh console -C "objects nodes"`` would lose their ends.
    """
    from rich.console import Console

    out = Console(markup=False, emoji=False)
    if not out.is_terminal:
        out = Console(markup=False, emoji=False, width=PIPED_WIDTH)
    return out
