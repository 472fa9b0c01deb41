"""Every page, the admin's and the widget included, in the light and the dark colour scheme:
no serious or critical axe-core (WCAG 2.2 AA) violation. axe-core is vendored for the tests
(tests/vendor/axe-core) and injected through the browser's devtools, so our own strict CSP
stays as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page

from sessions_monitor import embed
from tests.e2e.dash import Dash, log_in, new_session

pytestmark = pytest.mark.browser

AXE = (Path(__file__).resolve().parent.parent / "vendor" / "axe-core" / "axe.min.js").read_text()
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


async def violations(page: Page) -> list[dict[str, Any]]:
    await page.evaluate(AXE)
    result = await page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS
    )
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


def describe(found: list[dict[str, Any]]) -> str:
    return json.dumps(
        [
            {
                "rule": v["id"],
                "impact": v["impact"],
                "help": v["help"],
                "where": [node["target"] for node in v["nodes"][:5]],
                "why": [node.get("failureSummary", "")[:300] for node in v["nodes"][:2]],
            }
            for v in found
        ],
        indent=1,
        ensure_ascii=False,
    )


async def test_no_page_has_a_serious_accessibility_violation(
    dash: Dash, scheme_context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await scheme_context.new_page()
    await page.goto(dash.base_url + "/accounts/login/")
    found: dict[str, list[dict[str, Any]]] = {"/accounts/login/": await violations(page)}
    await log_in(page, dash.base_url)
    live = await new_session(dash, page, bot_name="Accessible bot")
    dash.control.emit(live, status="recording")
    dash.control.emit(live, join="Alice")
    failed = await new_session(dash, page, bot_name="Failed bot")
    dash.control.emit(failed, status="failed", error_code="JOIN_TIMEOUT", error_message="x")
    token = embed.make_token(live)
    for path in (
        "/",
        "/?filter=failed",
        f"/sessions/{live}/",
        f"/sessions/{failed}/",
        f"/embed/sessions/{live}/snippet/",
        embed.widget_path(live, token),
        embed.widget_path(live, token) + "&theme=dark",
        embed.widget_path(live, token) + "&theme=light",
        f"/embed/sessions/{live}/?token=tampered",
        "/admin/",
        "/admin/sessions_monitor/meetingsession/",
        f"/admin/sessions_monitor/meetingsession/{live}/change/",
        "/admin/sessions_monitor/sessionevent/",
        "/insights/",
        "/alerts/",
        "/follows/",
        "/?filter=all&status=failed&sort=-started",
    ):
        await page.goto(dash.base_url + path)
        await page.wait_for_load_state("networkidle")
        found[path] = await violations(page)
    bad = {path: items for path, items in found.items() if items}
    assert not bad, "\n".join(f"{path}: {describe(items)}" for path, items in bad.items())
