"""The files ``objects init`` writes: planned first, then shown as diffs or written."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlannedFile:
    """One file ``init`` would write, next to what is on disk now."""

    path: Path
    """Relative to the project root."""
    new: str
    old: str | None
    write: bool
    """False when the file is up to date, or differs and is kept (no ``--force``)."""
    kept: tuple[str, ...] = ()
    """Values of a merged file (``.env``) that differ from what init writes and are kept."""

    @property
    def status(self) -> str:
        """What applying the plan does (or did) to this file."""
        if self.old is None:
            return "created"
        if self.kept:  # never "up to date": a value init wanted was refused
            if self.old != self.new:
                return "updated, differing values kept (--force overwrites them)"
            return "differs, kept (--force overwrites it)"
        if self.old == self.new:
            return "up to date"
        return "updated" if self.write else "differs, kept (--force overwrites it)"

    def diff(self) -> str:
        """A unified diff from what is on disk to what would be written."""
        name = self.path.as_posix()
        return "".join(
            difflib.unified_diff(
                (self.old or "").splitlines(keepends=True),
                self.new.splitlines(keepends=True),
                fromfile="/dev/null" if self.old is None else f"a/{name}",
                tofile=f"b/{name}",
            )
        )


def plan(
    root: Path, path: Path, content: str, *, force: bool, merge: bool = False,
    kept: tuple[str, ...] = (),
) -> PlannedFile:
    """Plan writing ``content`` to ``root/path``.

    A new file is always written; a differing one only with ``force``, or when ``merge`` says
    ``content`` was computed from the old text (it only adds to it, keeping ``kept``).
    """
    target = root / path
    old = target.read_text() if target.is_file() else None
    write = old is None or (old != content and (force or merge))
    return PlannedFile(path, content, old, write, kept)


def apply(root: Path, planned: list[PlannedFile]) -> None:
    """Write every planned file that should be written (creating folders)."""
    for item in planned:
        if item.write:
            target = root / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(item.new)
