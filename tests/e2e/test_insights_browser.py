"""The Insights page in real Chromium, light and dark: the charts draw and are readable, the
page keeps the strict CSP and axe-core's AA rules, the filter form swaps the results with
htmx and pushes the URL, and clicking a bar lands on the session list of its sessions."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.e2e.dash import Dash, csp_violations, log_in, running_dash, screenshot
from tests.e2e.test_accessibility import describe, violations

pytestmark = pytest.mark.browser

SESSIONS = 1200


def seed_history(sessions: int = SESSIONS, seed: int = 14) -> None:
    """Six days of finished sessions (run inside Django, against the dashboard's database)."""
    from sessions_monitor.models import MeetingSession
    from sessions_monitor.simulator.scenarios import FAILURES

    rng = random.Random(seed)
    now = datetime.now(UTC)
    codes = [code for code, _message in FAILURES.values()]
    platforms = ["teams"] * 4 + ["zoom"] * 3 + ["google_meet"] * 2 + ["webex"]
    rows = []
    for number in range(sessions):
        started = now - timedelta(seconds=rng.uniform(600, 6 * 86400))
        failed = rng.random() < 0.25
        got_in = not failed or rng.random() < 0.4
        in_at = started + timedelta(seconds=rng.lognormvariate(3.2, 0.7)) if got_in else None
        length = timedelta(minutes=rng.choice([3, 10, 20, 45, 75, 150]) * rng.uniform(0.6, 1.3))
        rows.append(
            MeetingSession(
                session_id=f"mbsess_hist{number:05d}",
                bot_name=rng.choice(["Notetaker", "Sales Bot", "Support Scribe"]),
                platform=rng.choice(platforms),
                status="failed" if failed else "completed",
                error_code=rng.choice(codes) if failed else "",
                started_at=started,
                last_event_at=(in_at or started) + length,
                in_meeting_at=in_at,
                ended_at=(in_at or started) + (timedelta(seconds=30) if failed else length),
                stream_state="ended",
            )
        )
    MeetingSession.objects.bulk_create(rows, batch_size=500)


@pytest.fixture(scope="module")
def history_dash() -> Iterator[Dash]:
    """`serve` (embedded relay and simulator) over a database with a week of history."""
    seed = "from tests.e2e.test_insights_browser import seed_history; seed_history()"
    with running_dash("meetingdash-insights-", shell=seed) as dash:
        yield dash


async def computed(page: Page, selector: str, prop: str) -> str:
    value: str = await page.eval_on_selector(
        selector, "(el, prop) => getComputedStyle(el)[prop]", prop
    )
    return value


async def test_insights_charts_in_both_schemes_and_a_bar_opens_its_sessions(
    history_dash: Dash, scheme_context: BrowserContext
) -> None:
    dark = await scheme_context.new_page()
    scheme = (
        "dark"
        if await dark.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
        else "light"
    )
    await dark.close()
    page = await scheme_context.new_page()
    blocked = csp_violations(page)
    await log_in(page, history_dash.base_url, "/insights/?range=7d")
    await expect(page.locator(".nav a[aria-current=page]")).to_have_text("Insights")

    for chart in (
        "#chart-time",
        "#chart-rate",
        "#chart-errors",
        "#chart-platforms",
        "#chart-durations",
    ):
        await expect(page.locator(chart)).to_be_visible()
        box = await page.locator(chart).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 60, chart
    assert await page.locator("#chart-time rect.kind-completed").count() >= 7
    assert await page.locator("#chart-errors a.chart-link").count() == 7  # the simulator's codes
    started = await page.locator("#total-started").inner_text()
    assert int(started) >= SESSIONS - 10  # a week of history (plus what the simulator runs)

    # Readable in this scheme: bars and labels stand out from the card they are drawn on.
    card = await computed(page, "#chart-time", "backgroundColor")
    surface = await page.eval_on_selector(
        "#chart-time", "el => getComputedStyle(el.closest('.card')).backgroundColor"
    )
    assert card in ("rgba(0, 0, 0, 0)", surface)
    for selector in (
        "#chart-time rect.kind-completed",
        "#chart-time rect.kind-failed",
        "#chart-time .chart-axis",
        "#chart-errors .chart-label",
    ):
        assert await computed(page, selector, "fill") != surface, selector
    dark_surface = surface in ("rgb(23, 29, 37)",)
    assert dark_surface == (scheme == "dark"), (scheme, surface)

    found = await violations(page)
    assert found == [], describe(found)
    if os.getenv("MEETINGDASH_SCREENSHOTS_DIR"):
        await screenshot(page, "insights.png" if scheme == "light" else "insights-dark.png")

    # The filter form: htmx swaps the results and pushes the URL; the page does not reload.
    await page.evaluate("window.__notReloaded = true")
    await page.select_option("#insights-range", "30d")
    await page.select_option("#insights-platform", "zoom")
    await page.click("#insights-form button[type=submit]")
    await page.wait_for_url("**/insights/?*range=30d*")
    await expect(page.locator("#insights-summary-title")).to_contain_text("Last 30 days")
    await expect(page.locator("#insights-summary-title")).to_contain_text("platform zoom")
    assert await page.evaluate("window.__notReloaded === true")
    assert parse_qs(urlsplit(page.url).query)["platform"] == ["zoom"]

    # A bar of failures opens the session list with exactly that bar's parameters.
    bar = page.locator("#chart-time rect.kind-failed").last
    title = await bar.locator("xpath=..").locator("title").text_content()
    await bar.click()
    await page.wait_for_url("**/?filter=all*")
    params = parse_qs(urlsplit(page.url).query)
    assert params["status"] == ["failed"] and params["platform"] == ["zoom"], params
    start = datetime.fromisoformat(params["from"][0])
    end = datetime.fromisoformat(params["to"][0])
    assert end - start == timedelta(days=1) and start.strftime("%Y-%m-%d") in (title or "")
    await expect(page.locator("h1")).to_have_text("Sessions")
    assert blocked == []
