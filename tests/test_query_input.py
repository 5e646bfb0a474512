"""Malformed listing input (limit, cursor, status) is a 400 that says what is wrong, not a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fastapi_objects import Runtime
from fastapi_objects._exceptions import InvalidQuery
from tests._apps import Counter


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": 0}, "limit must be"),
        ({"limit": 10_001}, "limit must be"),
        ({"cursor": "not a cursor"}, "malformed cursor"),
        ({"cursor": "W1td"}, "malformed cursor"),  # base64 of JSON that is not a pair
        ({"status": "sleeping"}, "status must be one of"),
    ],
)
def test_bad_listing_input_is_a_400(
    client: TestClient, params: dict[str, object], words: str
) -> None:
    client.post("/counters/a/increment")
    response = client.get("/list", params=params)
    assert response.status_code == 400, response.text
    body = response.json()["error"]
    assert body["type"] == "invalid_query" and words in body["message"]


def test_cursors_still_page_through(client: TestClient) -> None:
    for key in ("a", "b", "c"):
        client.post(f"/counters/{key}/increment")
    first = client.get("/list", params={"limit": 2}).json()
    second = client.get("/list", params={"limit": 2, "cursor": first["next"]}).json()
    assert first["keys"] + second["keys"] == ["a", "b", "c"] and second["next"] is None


async def test_runtime_query_raises_invalid_query() -> None:
    async with Runtime(objects=[Counter], database_url="memory://") as rt:
        with pytest.raises(InvalidQuery):
            await rt.query(Counter, limit=True)  # a bool is not a limit
        with pytest.raises(InvalidQuery):
            await rt.query(Counter, cursor="%%%")
