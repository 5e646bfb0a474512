"""The inspector's page in headless Chromium: every view, the live view, an edit, a restore.

The app (``tests/_inspector_app.py``) runs in uvicorn on a temp SQLite file; Playwright logs
in with HTTP Basic. Each view is saved as a screenshot in the test's tmp_path, or in the
folder ``INSPECTOR_SCREENSHOTS`` names (``docs/inspector`` keeps the README's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._inspector_app import ADMIN, Counter, make_app, populate
from tests._server import ServerFromSyncCode
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _expect

pytestmark = pytest.mark.browser

BASE = "/objects/inspector"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerFromSyncCode, Any]]:
    """Two nodes on one SQLite file: the page is served by the first, which owns most."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'objects.db'}"
    app, objects = make_app(url, node_id="m1-3fa2c1", machine="m1", region="ams")
    other_app, other = make_app(url, node_id="m2-7b9d04", machine="m2", region="fra")
    server = ServerFromSyncCode(app)
    second = ServerFromSyncCode(other_app)
    try:
        server.run(populate(objects))
        second.run(other.get(Counter, "gamma").increment())  # the second node owns one
        yield server, objects
    finally:
        second.stop()
        server.stop()


@pytest.fixture
def page(
    served: tuple[ServerFromSyncCode, Any], request: pytest.FixtureRequest
) -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install chromium (./scripts/test does)"
        if os.environ.get("CI"):
            pytest.fail(reason + " - and CI is set, so the browser tests must run")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    server, _ = served
    errors: list[str] = []
    failed: list[tuple[str, str]] = []  # (status, url) of the responses that were errors
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(
            base_url=server.url, viewport={"width": 1280, "height": 900},
            http_credentials={"username": ADMIN[0], "password": ADMIN[1]},
        )
        context.set_default_timeout(TIMEOUT_MS)
        tab = context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" and
               not m.text.startswith("Failed to load resource") else None)
        tab.on("response", lambda r: failed.append((str(r.status), r.url))
               if r.status >= 400 else None)
        yield tab
        context.close()
        browser.close()
    assert not errors, errors
    expected = request.node.get_closest_marker("failing")
    allowed = set(expected.args) if expected else set()
    assert not [(status, url) for status, url in failed if status not in allowed], failed


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("INSPECTOR_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.failing("412", "422")
def test_every_view_of_the_inspector(
    page: Any, served: tuple[ServerFromSyncCode, Any], tmp_path: Path
) -> None:
    expect = _expect()
    server, objects = served

    page.goto(BASE + "/")
    expect(page.locator("#types tbody tr")).to_have_count(5)
    counter_row = page.locator("#types tr", has_text="counter").first
    expect(counter_row).to_contain_text("4")
    expect(counter_row).to_contain_text("7.0 days")
    shot(page, tmp_path, "types")

    page.locator("#types a", has_text="counter").first.click()
    expect(page.locator("#objects tbody tr")).to_have_count(4)
    expect(page.locator("#objects tr", has_text="gamma")).to_contain_text("m2-7b9d04")
    page.locator("input[name=prefix]").fill("user:")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#objects tbody tr")).to_have_count(1)
    expect(page.locator("#objects")).to_contain_text("user:7")
    page.locator("input[name=prefix]").fill("")
    page.locator("select[name=status]").select_option("active")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#objects tbody tr")).to_have_count(4)
    shot(page, tmp_path, "objects")

    # A browser client attached to counter:alpha, in a tab of its own (the package's client).
    client = page.context.new_page()
    client.goto(BASE + "/")
    client.evaluate("window.c = ObjectsClient.connect('/objects/counter/alpha/ws'); c.ready")

    page.goto(BASE + "/objects/counter/alpha")
    expect(page.locator("#live-status")).to_have_text("open")
    expect(page.locator("#rev")).to_have_text("3")
    expect(page.locator("#connections tbody tr")).to_have_count(1)
    expect(page.locator("#history tbody tr")).to_have_count(3)
    server.run(objects.get(Counter, "alpha").increment(4))  # seen live, state follows
    expect(page.locator("#live li").first).to_contain_text("changed")
    expect(page.locator("#live li").first).to_contain_text('{"value":7}')
    expect(page.locator("#rev")).to_have_text("4")
    assert json.loads(page.locator("#state").inner_text())["value"] == 7

    # An edit: the state as JSON, saved as a patch under the rev it started from.
    page.get_by_role("button", name="Edit").click()
    draft = json.loads(page.locator("#draft").input_value())
    draft["value"], draft["tags"] = 100, ["vip"]
    page.locator("#draft").fill(json.dumps(draft, indent=2))
    shot(page, tmp_path, "object-edit")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#message")).to_have_text("saved as rev 5")
    expect(page.locator("#rev")).to_have_text("5")
    expect(page.locator("#live li").first).to_contain_text("objects:edit")
    assert server.run(objects.get(Counter, "alpha").get()) == 100  # the live instance has it
    assert client.evaluate("c.status") == "open"

    # An edit that breaks the model is refused and changes nothing; so is a stale one.
    page.get_by_role("button", name="Edit").click()
    page.locator("#draft").fill(page.locator("#draft").input_value().replace("100", "-1"))
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#message")).to_contain_text("422: counter:alpha: the edited state")
    server.run(objects.get(Counter, "alpha").increment())  # someone else moves it on
    expect(page.locator("#rev")).to_have_text("6")
    page.locator("#draft").fill(page.locator("#draft").input_value().replace("-1", "5"))
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#message")).to_contain_text("412: counter:alpha is at rev 6, not 5")
    page.get_by_role("button", name="Cancel").click()
    assert server.run(objects.get(Counter, "alpha").get()) == 101

    # The journal and the kept states followed, without a reload.
    expect(page.locator("#journal tbody tr").first).to_contain_text("objects:edit")
    expect(page.locator("#journal tbody tr").first).to_contain_text("by ann")
    expect(page.locator("#history tbody tr").first).to_contain_text("current")
    expect(page.locator("#history tbody tr")).to_have_count(6)
    page.locator("button.restore[data-rev='2']").click()
    expect(page.locator("#message")).to_have_text("restored rev 2: now at rev 7")
    expect(page.locator("#live li").first).to_contain_text("objects:restore")
    expect(page.locator("#journal tbody tr").first).to_contain_text("objects:restore")
    expect(page.locator("#history tbody tr").first).to_contain_text("7")
    assert json.loads(page.locator("#state").inner_text())["value"] == 2
    server.run(objects.get(Counter, "alpha").increment(3))
    expect(page.locator("#rev")).to_have_text("8")
    page.locator("#live").scroll_into_view_if_needed()
    shot(page, tmp_path, "object")

    page.goto(BASE + "/objects/reminder/ann")  # a failed alarm, with its last error
    failed = page.locator("#alarms tr.failed")
    expect(failed).to_contain_text("broken")
    expect(failed).to_contain_text("mail server unreachable")
    expect(page.locator("#alarms tbody tr")).to_have_count(2)
    shot(page, tmp_path, "object-alarms")

    page.goto(BASE + "/objects/till/main")  # event-sourced: restores from its journal
    expect(page.locator("#state")).to_contain_text('"total": 75')
    page.locator("#restore-form input[name=rev]").fill("2")
    page.get_by_role("button", name="Restore").click()
    expect(page.locator("#message")).to_contain_text("restored rev 2")
    assert json.loads(page.locator("#state").inner_text()) == {"total": 15}

    page.goto(BASE + "/nodes")
    expect(page.locator("#nodes tbody tr")).to_have_count(2)
    for node, region in (("m1-3fa2c1", "ams"), ("m2-7b9d04", "fra")):
        expect(page.locator("#nodes tr", has_text=node)).to_contain_text("alive")
        expect(page.locator("#nodes tr", has_text=node)).to_contain_text(region)
    shot(page, tmp_path, "nodes")

    page.goto(BASE + "/queues")
    expect(page.locator("#queues tbody tr")).to_have_count(1)
    page.locator("#queues a", has_text="emails").click()
    for section, count in (("pending", 1), ("leased", 1), ("dead", 1)):
        expect(page.locator(f"#{section} tbody tr")).to_have_count(count)
    expect(page.locator("#dead")).to_contain_text("smtp: connection refused")
    shot(page, tmp_path, "queue")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator("#message")).to_contain_text("will run again")
    page.reload()
    expect(page.locator("#pending tbody tr")).to_have_count(2)
    client.close()


@pytest.mark.failing("404")
def test_the_page_shows_errors_as_pages(page: Any) -> None:
    expect = _expect()
    response = page.goto(BASE + "/objects/counter/nobody")
    assert response.status == 404
    expect(page.locator(".error")).to_contain_text("no object counter:nobody is stored")
    response = page.goto(BASE + "/types/nosuch")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("unknown_type")
