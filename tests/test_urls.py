"""Database URLs as users paste them (Fly, Heroku, libpq) work end to end."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from fastapi_objects import DurableObject, MissingDependency, Runtime
from fastapi_objects.storage import normalize_url, open_storage


class NoteState(BaseModel):
    text: str = ""


class Note(DurableObject[NoteState]):
    async def write(self, text: str) -> str:
        self.state.text = text
        return text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql://u@h/db?sslmode=disable", "postgresql+asyncpg://u@h/db?sslmode=disable"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("memory://", "memory://"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["nonsense", "mysql://u@h/db"])
def test_bad_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_storage(url)


def test_missing_driver_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "asyncpg" else real(name, *a)
    )
    with pytest.raises(MissingDependency, match=r"pip install 'fastapi-objects\[postgres\]'"):
        open_storage("postgres://u@h/db")


async def test_fly_style_url_with_sslmode(pg_url: str, pg_schema: str) -> None:
    # What `fly postgres attach` writes: postgres:// and ?sslmode=disable.
    url = pg_url.replace("postgresql+asyncpg://", "postgres://") + "?sslmode=disable"
    async with Runtime(
        objects=[Note], database_url=url, schema=pg_schema, create_tables=True
    ) as rt:
        assert await rt.get(Note, "n").write("hello") == "hello"
    async with Runtime(objects=[Note], database_url=url, schema=pg_schema) as rt:
        page = await rt.query(Note)
        assert [cp.state for cp in page.items] == [{"text": "hello"}]
