"""State sync in headless Chromium: the JS client's ``client.state`` follows 1,000 calls.

The page (served by a small app in uvicorn, on a temp SQLite file) loads ``/objects/client.js``,
makes 1,000 random calls, drops its socket mid-run while the server changes the state, and
resumes; its ``client.state`` must equal the server's state.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from fastapi_objects import Objects
from tests._server import ServerFromSyncCode
from tests._sync import Board, random_step, same_json
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

pytestmark = pytest.mark.browser

PAGE = """<!doctype html><title>sync</title>
<script src="/objects/client.js"></script>
<script>
  window.client = ObjectsClient.connect("/objects/board/web/ws");
  window.seen = { states: 0, patches: 0, revs: [] };
  client.on("state", (state, change) => {
    if (change.patch === null) seen.states += 1; else seen.patches += 1;
    seen.revs.push(change.rev);
  });
  window.steps = async (list) => {
    for (const args of list) {
      try { await client.call("step", args); } catch (err) {
        if (err.type !== "internal_error") throw err;   // "fail": rolled back on purpose
      }
    }
    return client.rev;
  };
</script>"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerFromSyncCode, Objects]]:
    objects = Objects(objects=[Board], database_url=f"sqlite+aiosqlite:///{tmp_path / 'o.db'}")
    app = FastAPI(lifespan=objects.lifespan)
    app.include_router(objects.router)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    server = ServerFromSyncCode(app)
    try:
        yield server, objects
    finally:
        server.stop()


@pytest.fixture
def page(served: tuple[ServerFromSyncCode, Objects]) -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install chromium (./scripts/test does)"
        if os.environ.get("CI"):
            pytest.fail(reason + " - and CI is set, so the browser tests must run")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=served[0].url)
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        yield tab
        context.close()
        browser.close()
    assert not errors, errors


def test_the_js_client_state_follows_1000_calls_and_a_resume(
    served: tuple[ServerFromSyncCode, Objects], page: Any
) -> None:
    server, objects = served
    rnd = random.Random(99)
    page.goto("/")
    page.wait_for_function("client.state !== null")
    page.evaluate("(list) => steps(list)", [random_step(rnd) for _ in range(500)])
    page.evaluate("client.ws.close()")  # the network drops it: the client reconnects by itself
    page.wait_for_function("client.status !== 'open'")
    board = objects.get(Board, "web")
    for _ in range(5):  # the state moves on while the page is away
        try:
            server.run(board.step(**random_step(rnd)))
        except ValueError:
            pass
    page.wait_for_function("client.status === 'open'")
    rev = page.evaluate("(list) => steps(list)", [random_step(rnd) for _ in range(500)])
    view = server.run(board.view())
    assert same_json(json.loads(page.evaluate("JSON.stringify(client.state)")), view)
    seen = page.evaluate("seen")
    assert seen["states"] == 1, seen  # the reconnect resumed with a patch
    assert seen["revs"] == sorted(seen["revs"]) and seen["revs"][-1] == rev
    stored = server.run(objects.runtime.storage.load("board", "web"))
    assert stored is not None and stored.rev == rev


def test_a_gap_makes_the_js_client_ask_for_the_whole_view(
    served: tuple[ServerFromSyncCode, Objects], page: Any
) -> None:
    server, objects = served
    page.goto("/")
    page.wait_for_function("client.state !== null")
    page.evaluate("client.rev = client.rev - 1")  # as if a patch had been missed
    page.evaluate("(list) => steps(list)", [{"op": "set", "n": 7}])
    page.wait_for_function("seen.states === 2 && client.state.value === 7")
    assert same_json(page.evaluate("client.state"), server.run(objects.get(Board, "web").view()))
