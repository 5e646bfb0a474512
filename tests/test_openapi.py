"""``get_object`` declares its key: ``/openapi.json`` names every path parameter, with its rule.

Seen: ``/counters/{key}/increment`` declared no ``key`` parameter (the dependency read
``path_params`` itself), so Swagger UI offered no field and schema-driven tools rejected it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from example_app.main import app as example_app
from fastapi_objects import DurableObject, Handle, Objects, get_object
from fastapi_objects.fastapi.dependencies import check_routes
from fastapi_objects.runtime.keys import KEY_REGEX, MAX_KEY_LENGTH

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


class _State(BaseModel):
    value: int = 0


class Tally(DurableObject[_State]):
    async def add(self, by: int = 1) -> int:
        self.state.value += by
        return self.state.value


def _undeclared(schema: dict[str, Any]) -> list[str]:
    """``METHOD path {param}`` for each template parameter an operation does not declare."""
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            missing += [
                f"{method.upper()} {path} {{{name}}}"
                for name in re.findall(r"{([^}]+)}", path)
                if name not in declared
            ]
    return missing


def _extra(schema: dict[str, Any]) -> list[str]:
    """Path parameters an operation declares that its path template does not have."""
    extra = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method in METHODS:
                extra += [
                    f"{method.upper()} {path} {p['name']}"
                    for p in operation.get("parameters", [])
                    if p["in"] == "path" and f"{{{p['name']}}}" not in path
                ]
    return extra


def test_every_path_parameter_of_the_example_app_is_declared() -> None:
    schema = example_app.openapi()
    assert "/counters/{key}/increment" in schema["paths"]
    assert _undeclared(schema) == []
    assert _extra(schema) == []
    check_routes(example_app.routes)  # and the start-up check agrees


def test_the_key_parameter_carries_the_key_rule() -> None:
    operation = example_app.openapi()["paths"]["/counters/{key}/increment"]["post"]
    (key,) = [p for p in operation["parameters"] if p["name"] == "key"]
    assert key["in"] == "path" and key["required"] is True
    assert key["schema"]["type"] == "string"
    assert key["schema"]["pattern"] == KEY_REGEX
    assert key["schema"]["minLength"] == 1 and key["schema"]["maxLength"] == MAX_KEY_LENGTH
    # The room's key is its own path parameter, under its own name.
    history = example_app.openapi()["paths"]["/api/rooms/{room}/messages"]["get"]
    assert [p["name"] for p in history["parameters"] if p["in"] == "path"] == ["room"]


def from_header(connection: HTTPConnection) -> str:
    return connection.headers.get("x-tally", "")


def _app(tmp_path: Path) -> FastAPI:
    objects = Objects(objects=[Tally], database_url=f"sqlite+aiosqlite:///{tmp_path / 'o.db'}")
    app = FastAPI(lifespan=objects.lifespan)

    @app.post("/tallies/{name}/add")
    async def add(tally: Annotated[Handle[Tally], Depends(get_object(Tally, key="name"))]) -> int:
        return await tally.add()

    @app.post("/classes/{class}/add")  # a path parameter Python cannot name: an alias
    async def add_class(
        tally: Annotated[Handle[Tally], Depends(get_object(Tally, key="class"))],
    ) -> int:
        return await tally.add()

    @app.post("/shared/{key}/add")  # the route reads the key too: declared once
    async def add_shared(
        key: str, tally: Annotated[Handle[Tally], Depends(get_object(Tally))]
    ) -> dict[str, Any]:
        return {"key": key, "value": await tally.add()}

    @app.post("/mine/add")  # a callable key source declares no path parameter
    async def add_mine(
        tally: Annotated[Handle[Tally], Depends(get_object(Tally, key=from_header))],
    ) -> int:
        return await tally.add()

    return app


def test_named_aliased_shared_and_callable_keys(tmp_path: Path) -> None:
    app = _app(tmp_path)
    schema = app.openapi()
    assert _undeclared(schema) == [] and _extra(schema) == []
    assert [p["name"] for p in schema["paths"]["/shared/{key}/add"]["post"]["parameters"]] == [
        "key"
    ]
    assert "parameters" not in schema["paths"]["/mine/add"]["post"]
    check_routes(app.routes)
    with TestClient(app) as client:
        assert client.post("/tallies/t/add").json() == 1
        assert client.post("/classes/t/add").json() == 2  # the same object
        assert client.post("/shared/t/add").json() == {"key": "t", "value": 3}
        assert client.post("/mine/add", headers={"x-tally": "t"}).json() == 4


@pytest.mark.parametrize("key", ["a%20b", "%2E", "%2E%2E", "caf%C3%A9", "k" * (MAX_KEY_LENGTH + 1)])
def test_a_key_outside_the_rule_is_the_400_every_bad_key_gets(tmp_path: Path, key: str) -> None:
    with TestClient(_app(tmp_path)) as client:
        response = client.post(f"/tallies/{key}/add")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_key"


def test_a_route_without_the_key_parameter_is_refused_at_start() -> None:
    app = FastAPI()

    @app.post("/tallies/add")
    async def add(tally: Annotated[Handle[Tally], Depends(get_object(Tally))]) -> int:
        return await tally.add()

    with pytest.raises(RuntimeError, match=r"POST /tallies/add has no path parameter \{key\}"):
        check_routes(app.routes)
