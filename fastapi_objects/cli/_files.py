"""The files ``objects init`` writes: planned first, then shown as diffs or written."""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|PWD|TOKEN|KEY|CREDENTIAL|AUTH", re.IGNORECASE)


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
    secret: bool = False
    """Holds secrets (``.env``): written readable by its owner only, its diff redacted."""

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
        """A unified diff from what is on disk to what would be written (secrets hidden)."""
        name = self.path.as_posix()
        old, new = (self.old or "").splitlines(keepends=True), self.new.splitlines(keepends=True)
        if self.secret:
            old, new = [_redacted(line) for line in old], [_redacted(line) for line in new]
        return "".join(
            difflib.unified_diff(
                old, new, fromfile="/dev/null" if self.old is None else f"a/{name}",
                tofile=f"b/{name}",
            )
        )


def _redacted(line: str) -> str:
    """A ``.env`` line as a diff may show it: URL passwords and secret-looking values hidden."""
    from ._errors import redact

    name, sep, value = line.rstrip("\n").partition("=")
    if not sep or name.lstrip().startswith("#"):
        return line
    if "://" in value:
        quote = value[:1] if value[:1] in "'\"" else ""
        value = quote + redact(value.strip("'\"")) + quote
    elif _SECRET_NAME.search(name) and value:
        value = "***"
    return f"{name}={value}\n"


def plan(
    root: Path, path: Path, content: str, *, force: bool, merge: bool = False,
    kept: tuple[str, ...] = (), secret: bool = False,
) -> PlannedFile:
    """Plan writing ``content`` to ``root/path``.

    A new file is always written; a differing one only with ``force``, or when ``merge`` says
    ``content`` was computed from the old text (it only adds to it, keeping ``kept``).
    """
    target = root / path
    old = target.read_text() if target.is_file() else None
    write = old is None or (old != content and (force or merge))
    return PlannedFile(path, content, old, write, kept, secret)


def plan_gitignore(root: Path, entries: list[tuple[str, str]]) -> PlannedFile:
    """Plan ``.gitignore`` so that git ignores each pattern of ``entries`` (``(pattern, why)``).

    Created if missing, else appended to. Patterns are read as git reads them, roughly: the
    last one matching a name decides, and a ``!`` negates.
    """
    path = root / ".gitignore"
    old = path.read_text() if path.is_file() else None
    text = old or ""
    said = None  # the comment over the entries just added (one per group)
    for pattern, why in entries:
        if _ignored(old or "", pattern.replace("*", "wal")):
            continue
        if text and not text.endswith("\n"):
            text += "\n"
        if why != said:
            text += f"# {why}\n"
            said = why
        text += f"{pattern}\n"
    return plan(root, Path(".gitignore"), text, force=False, merge=True)


def _ignored(gitignore: str, name: str) -> bool:
    ignored = False
    for line in gitignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#") or pattern.endswith("/"):
            continue
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(name, pattern.lstrip("!").lstrip("/")):
            ignored = not negated
    return ignored


def apply(root: Path, planned: list[PlannedFile]) -> None:
    """Write every planned file that should be written (creating folders).

    A secret file is created readable by its owner only, and made so if it was not: the
    password must never be readable by others, not even between the write and a chmod.
    """
    for item in planned:
        if item.write:
            target = root / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not item.secret:
                target.write_text(item.new)
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through open()
            with os.fdopen(fd, "w") as file:
                file.write(item.new)
