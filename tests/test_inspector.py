"""The inspector's JSON API on real apps (SQLite and PostgreSQL): reads, edits, restores, guards.

The app is ``tests/_inspector_app.py``: the inspector behind HTTP Basic, and counters (with kept
history), an event-sourced till, reminders with a failed alarm and a queue with jobs in every
state. The live view and a cluster are in ``test_inspector_live.py``; the page, in Chromium, in
``test_inspector_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from fastapi_objects import Objects
from tests._inspector_app import ADMIN, Counter, Sleepy, make_app, populate, require_admin
from tests._support import strict_json

API = "/objects/inspector/api"
PATCH = {"content-type": "application/json-patch+json"}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}"}
    else:
        yield {"database_url": request.getfixturevalue("pg_url"),
               "schema": request.getfixturevalue("pg_schema"), "create_tables": True}


@pytest.fixture
def served(database: dict[str, Any]) -> Iterator[tuple[TestClient, Objects]]:
    app, objects = make_app(**database)
    with TestClient(app) as client:
        client.portal.call(populate, objects)
        client.auth = ADMIN
        yield client, objects


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return strict_json(response.text)


def _error(response: Any, status: int, type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["type"] == type, body
    return str(body["error"]["message"])


# -- mounting and guarding -------------------------------------------------------------------


def test_it_refuses_to_mount_unprotected_unless_asked_on_purpose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    objects = Objects(objects=[Counter], database_url="memory://")
    for dependencies in (None, []):
        with pytest.raises(ValueError, match="will not mount unprotected") as refused:
            objects.inspector_router(dependencies=dependencies)
        assert "dependencies=[Depends(require_admin)]" in str(refused.value)
        assert "public=True" in str(refused.value)
    router = objects.inspector_router(public=True)
    assert "without protection (public=True)" in caplog.text
    assert all(r.dependant.dependencies == [] for r in router.routes if isinstance(r, APIRoute))
    with pytest.raises(ValueError, match="prefix must start with /"):
        objects.inspector_router(dependencies=[Depends(require_admin)], prefix="admin/")


PAGES = ["/", "/types/{type_name}", "/objects/{type_name}/{key}", "/nodes", "/queues",
         "/queues/{name}", "/static/{name}"]


def test_every_route_is_behind_the_dependencies(served: tuple[TestClient, Objects]) -> None:
    client, _ = served
    values = {"type_name": "counter", "key": "alpha", "name": "emails", "job": "x"}
    schema = client.get("/openapi.json").json()["paths"]
    routes = [(method.upper(), path) for path, operations in schema.items()
              if path.startswith(API) for method in operations]
    routes += [("GET", "/objects/inspector" + page) for page in PAGES]
    assert len(routes) == 19
    for method, template in routes:
        path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template)
        response = client.request(method, path, auth=None)
        assert response.status_code == 401, (method, path, response.text)
        wrong = client.request(method, path, auth=("ann", "guess"))
        assert wrong.status_code == 401, (method, path)
    for page in PAGES:  # and with the right credentials, the page answers
        path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], page).replace(
            "static/emails", "static/inspector.css")
        assert client.get("/objects/inspector" + path).status_code == 200, path


def test_nothing_of_it_is_reachable_through_objects_router(tmp_path: Any) -> None:
    objects = Objects(objects=[Counter], database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)
    with TestClient(app) as client:
        for path in ("/objects/inspector/api/types", "/objects/inspector/",
                     "/objects/inspector/static/inspector.js"):
            assert client.get(path).status_code == 404, path
    paths = {getattr(r, "path", "") for r in objects.router.routes}
    assert paths == {"/objects/client.js", "/objects/{type_name}/{key}/ws"}


def test_the_api_is_in_the_openapi_schema_and_the_page_is_not(
    served: tuple[TestClient, Objects],
) -> None:
    client, _ = served
    paths = client.get("/openapi.json").json()["paths"]
    api = sorted(p.removeprefix(API) for p in paths if p.startswith(API))
    assert api == [
        "/nodes", "/objects/{type_name}", "/objects/{type_name}/{key}",
        "/objects/{type_name}/{key}/history", "/objects/{type_name}/{key}/journal",
        "/objects/{type_name}/{key}/live", "/objects/{type_name}/{key}/restore",
        "/objects/{type_name}/{key}/state", "/queues", "/queues/{name}",
        "/queues/{name}/jobs/{job}/retry", "/types",
    ]
    assert not [p for p in paths if p.startswith("/objects/inspector/") and API not in p]
    patch = paths[API + "/objects/{type_name}/{key}/state"]["patch"]
    assert set(patch["requestBody"]["content"]) == {
        "application/json-patch+json", "application/json"
    }
    assert {"412", "422"} <= set(patch["responses"])


# -- reading -------------------------------------------------------------------------------------


def test_types_listing_detail_journal_nodes_and_queues(
    served: tuple[TestClient, Objects],
) -> None:
    client, objects = served
    types = {t["type"]: t for t in _ok(client.get(API + "/types"))["types"]}
    assert types["counter"] == {
        "type": "counter", "counts": {"active": 3, "hibernated": 0}, "total": 3,
        "event_sourced": False, "history": 7 * 86400.0, "public": True,
    }
    assert types["till"]["event_sourced"] and types["till"]["history"] is None
    assert types["objects_queue"]["public"] is False

    listed = _ok(client.get(API + "/objects/counter"))
    assert [o["key"] for o in listed["objects"]] == ["alpha", "beta", "user:7"]
    assert listed["objects"][0]["owner"] == objects.node_id and listed["next"] is None
    assert [o["key"] for o in _ok(client.get(API + "/objects/counter?prefix=user:"))["objects"]] \
        == ["user:7"]
    first = _ok(client.get(API + "/objects/counter?limit=2"))
    second = _ok(client.get(API + "/objects/counter", params={"cursor": first["next"]}))
    assert [o["key"] for o in first["objects"] + second["objects"]] == ["alpha", "beta", "user:7"]
    after = listed["objects"][0]["updated_at"]
    assert _ok(client.get(API + "/objects/counter", params={"updated_before": after}))[
        "objects"] == []
    assert _ok(client.get(API + "/objects/counter?status=hibernated"))["objects"] == []

    response = client.get(API + "/objects/counter/alpha")
    found = _ok(response)
    assert list(found) == ["type", "key", "rev", "state_version", "status", "owner", "state",
                           "alarms", "connections"]
    assert (found["rev"], found["state"]["value"], response.headers["etag"]) == (3, 3, '"3"')
    till = _ok(client.get(API + "/objects/till/main"))  # snapshot plus the events after it
    assert till["state"] == {"total": 75}

    alarms = {a["name"]: a for a in _ok(client.get(API + "/objects/reminder/ann"))["alarms"]}
    assert alarms["digest"]["status"] == "pending" and alarms["digest"]["payload"] == {"to": "ann"}

    journal = _ok(client.get(API + "/objects/till/main/journal?limit=3"))
    assert [e["rev"] for e in journal["entries"]] == [1, 2, 3] and journal["next"] == 3
    rest = _ok(client.get(API + "/objects/till/main/journal", params={"after": 3}))
    assert [(e["rev"], e["kind"], e["payload"]) for e in rest["entries"]] == [
        (4, "event", {"amount": 40})
    ]
    assert rest["next"] is None

    nodes = _ok(client.get(API + "/nodes"))
    (node,) = nodes["nodes"]
    assert node["node_id"] == nodes["this_node"] == objects.node_id
    assert node["state"] == "alive" and 0 < node["lease_left"] <= nodes["ttl"]
    assert node["owned"] >= 5

    queue = _ok(client.get(API + "/queues/emails"))
    assert [len(queue[k]) for k in ("pending", "leased", "dead")] == [1, 1, 1]
    assert queue["dead"][0]["last_error"] == "smtp: connection refused"
    assert "token_hash" not in str(queue)
    assert _ok(client.get(API + "/queues"))["queues"] == [
        {"name": "emails", "pending": 1, "leased": 1, "dead": 1, "completed": 0}
    ]


def test_a_failed_alarm_shows_with_its_last_error(served: tuple[TestClient, Objects]) -> None:
    client, _ = served
    for _ in range(400):  # the alarm fires at once and fails; wait for its record
        alarms = {a["name"]: a for a in _ok(client.get(API + "/objects/reminder/ann"))["alarms"]}
        if alarms["broken"]["status"] == "failed":
            break
        client.portal.call(_pause)
    assert alarms["broken"]["status"] == "failed"
    assert "mail server unreachable" in alarms["broken"]["last_error"]


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.025)


def test_reading_wakes_nothing(served: tuple[TestClient, Objects]) -> None:
    client, objects = served
    client.portal.call(objects.get(Sleepy, "zz").increment)
    runtime = objects.runtime

    def hibernated() -> bool:
        return ("sleepy", "zz") not in runtime._host.activations

    for _ in range(400):
        if hibernated():
            break
        client.portal.call(_pause)
    assert hibernated()
    thaws = objects.stats().thaws
    for path in ("/objects/sleepy", "/objects/sleepy/zz", "/objects/sleepy/zz/journal",
                 "/objects/sleepy/zz/history", "/types"):
        _ok(client.get(API + path))
    for page in ("/types/sleepy", "/objects/sleepy/zz"):
        assert client.get("/objects/inspector" + page).status_code == 200
    found = _ok(client.get(API + "/objects/sleepy/zz"))
    assert (found["status"], found["owner"], found["connections"]) == ("hibernated", None, [])
    assert hibernated() and objects.stats().thaws == thaws


def test_bad_reads_are_clear_client_errors(served: tuple[TestClient, Objects]) -> None:
    client, _ = served
    assert "no object counter:nope" in _error(
        client.get(API + "/objects/counter/nope"), 404, "not_found")
    _error(client.get(API + "/objects/nosuch"), 404, "unknown_type")
    _error(client.get(API + "/objects/counter/a%20b"), 400, "invalid_key")
    _error(client.get(API + "/objects/counter?status=gone"), 400, "invalid_query")
    _error(client.get(API + "/objects/counter?cursor=%%%"), 400, "invalid_query")
    _error(client.get(API + "/objects/counter?prefix=a%2Fb"), 400, "invalid_key")
    _error(client.get(API + "/queues/nope"), 404, "not_found")
    for path in ("/objects/counter?limit=0", "/objects/counter?limit=100000",
                 "/objects/counter/alpha/journal?after=-1", "/objects/counter?updated_after=x"):
        assert client.get(API + path).status_code == 422, path
    page = client.get("/objects/inspector/objects/counter/nope")
    assert page.status_code == 404 and "no object counter:nope" in page.text
    bad_time = client.get("/objects/inspector/types/counter?updated_after=soon")
    assert bad_time.status_code == 400 and "updated_after must be a time" in bad_time.text


# -- edits ---------------------------------------------------------------------------------------


def test_an_edit_is_a_turn_journaled_with_who_made_it(served: tuple[TestClient, Objects]) -> None:
    client, objects = served
    patch = [{"op": "replace", "path": "/value", "value": 40},
             {"op": "add", "path": "/tags/-", "value": "audited"}]
    response = client.patch(API + "/objects/counter/alpha/state", json=patch,
                            headers={**PATCH, "if-match": '"3"'})
    done = _ok(response)
    assert done == {"rev": 4, "state": {"value": 40, "label": "counter", "tags": ["audited"]}}
    assert response.headers["etag"] == '"4"'
    assert client.portal.call(objects.get(Counter, "alpha").get) == 40  # the live instance
    entries = _ok(client.get(API + "/objects/counter/alpha/journal"))["entries"]
    (entry,) = [e for e in entries if e["kind"] == "objects:edit"]
    assert entry["payload"]["by"] == "ann"  # from the guard's credentials: never the password
    assert ADMIN[1] not in str(entries) and entry["payload"]["patch"] == patch
    # Plain application/json is taken too, and a weak or bare If-Match.
    for if_match in ("W/\"4\"", "5"):
        again = client.patch(API + "/objects/counter/alpha/state", headers={"if-match": if_match},
                             json=[{"op": "replace", "path": "/label", "value": if_match}])
        assert again.status_code == 200, again.text


def test_an_edit_against_a_stale_rev_is_412_and_changes_nothing(
    served: tuple[TestClient, Objects],
) -> None:
    client, _ = served
    before = _ok(client.get(API + "/objects/counter/alpha"))
    message = _error(client.patch(
        API + "/objects/counter/alpha/state", headers={**PATCH, "if-match": '"2"'},
        json=[{"op": "replace", "path": "/value", "value": 0}],
    ), 412, "stale_revision")
    assert "at rev 3, not 2" in message
    assert _ok(client.get(API + "/objects/counter/alpha")) == before


@pytest.mark.parametrize(("body", "headers", "status", "type"), [
    ('[{"op": "replace", "path": "/value", "value": -5}]', {}, 422, "invalid_edit"),
    ('[{"op": "replace", "path": "/value", "value": "lots"}]', {}, 422, "invalid_edit"),
    ('[{"op": "remove", "path": "/missing"}]', {}, 422, "invalid_edit"),
    ('[{"op": "replace", "path": "/value"}]', {}, 422, "invalid_edit"),
    ('{"value": 3}', {}, 422, "invalid_edit"),
    ('[{"op": "replace", "path": "/value", "value": NaN}]', {}, 422, "invalid_edit"),
    ('[{"op": "replace", "path": "/value", "value": 1e400}]', {}, 422, "invalid_edit"),
    ('[{"op": "replace", "path": "/label", "value": "\\u0000"}]', {}, 422, "unstorable_value"),
    ("[{]", {}, 422, "invalid_edit"),
    (b"\xff\xfe", {}, 422, "invalid_edit"),
    ("[]", {"if-match": None}, 428, "precondition_required"),
    ("[]", {"if-match": '"three"'}, 400, "invalid_precondition"),
    ("[]", {"if-match": "*"}, 400, "invalid_precondition"),
    ("[]", {"if-match": '"0"'}, 400, "invalid_precondition"),
    ("[]", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    ("[]", {"content-type": None}, 415, "unsupported_media_type"),
    ("[" + '{"op": "test", "path": "/value", "value": 3},' * 40_000 + "]", {}, 413,
     "payload_too_large"),
])
def test_a_bad_edit_is_a_4xx_and_changes_nothing(
    served: tuple[TestClient, Objects], body: str | bytes, headers: dict[str, str | None],
    status: int, type: str,
) -> None:
    client, _ = served
    before = _ok(client.get(API + "/objects/counter/alpha"))
    sent = {**PATCH, "if-match": '"3"', **headers}
    response = client.patch(
        API + "/objects/counter/alpha/state", content=body,
        headers={k: v for k, v in sent.items() if v is not None},
    )
    _error(response, status, type)
    assert _ok(client.get(API + "/objects/counter/alpha")) == before


# -- restores --------------------------------------------------------------------------------------


def test_restore_by_rev_and_by_time(served: tuple[TestClient, Objects]) -> None:
    client, objects = served
    kept = _ok(client.get(API + "/objects/counter/alpha/history"))
    assert [k["rev"] for k in kept["revisions"]] == [3, 2, 1] and kept["next"] is None
    done = _ok(client.post(API + "/objects/counter/alpha/restore", json={"rev": 1}))
    assert (done["rev"], done["restored"], done["state"]["value"]) == (4, 1, 1)
    assert client.portal.call(objects.get(Counter, "alpha").get) == 1
    second = next(k for k in kept["revisions"] if k["rev"] == 2)
    by_time = _ok(client.post(API + "/objects/counter/alpha/restore", json={"at": second["at"]}))
    assert (by_time["restored"], by_time["state"]["value"]) == (2, 2)
    entries = _ok(client.get(API + "/objects/counter/alpha/journal"))["entries"]
    assert [(e["kind"], e["payload"]["rev"], e["payload"]["by"]) for e in entries] == [
        ("objects:restore", 1, "ann"), ("objects:restore", 2, "ann")
    ]
    # An event-sourced till restores from its journal: snapshot plus events up to rev 2.
    till = _ok(client.post(API + "/objects/till/main/restore", json={"rev": 2}))
    assert till["state"] == {"total": 15}


@pytest.mark.parametrize(("body", "headers", "status", "type"), [
    ({"rev": 99}, {}, 422, "invalid_edit"),
    ({"rev": 0}, {}, 422, "invalid_edit"),
    ({"rev": 1, "at": "2026-01-01T00:00:00Z"}, {}, 422, "invalid_edit"),
    ({}, {}, 422, "invalid_edit"),
    ({"rev": 1, "extra": True}, {}, 422, "invalid_edit"),
    ({"at": "the day before"}, {}, 422, "invalid_edit"),
    ({"at": "1999-01-01T00:00:00Z"}, {}, 404, "not_found"),
    ([1], {}, 422, "invalid_edit"),
    ({"rev": 1}, {"content-type": "text/plain"}, 415, "unsupported_media_type"),
])
def test_a_bad_restore_is_a_4xx_and_changes_nothing(
    served: tuple[TestClient, Objects], body: Any, headers: dict[str, str], status: int,
    type: str,
) -> None:
    import json

    client, _ = served
    before = _ok(client.get(API + "/objects/counter/alpha"))
    response = client.post(
        API + "/objects/counter/alpha/restore", content=json.dumps(body),
        headers={"content-type": "application/json", **headers},
    )
    _error(response, status, type)
    assert _ok(client.get(API + "/objects/counter/alpha")) == before


def test_a_dead_job_is_retried(served: tuple[TestClient, Objects]) -> None:
    client, _ = served
    dead = _ok(client.get(API + "/queues/emails"))["dead"][0]["id"]
    retry = API + f"/queues/emails/jobs/{dead}/retry"
    _error(client.post(retry, content=b"", headers={"content-type": "text/plain"}), 415,
           "unsupported_media_type")
    assert _ok(client.post(retry, headers={"content-type": "application/json"})) == {
        "retried": True
    }
    queue = _ok(client.get(API + "/queues/emails"))
    assert queue["dead"] == [] and len(queue["pending"]) == 2
    assert _ok(client.post(retry, json={})) == {"retried": False}  # not dead any more
