"""Live truth (issue 11), in a real Chromium against a real `serve`: a failure never slips by
unseen, a dead link never looks alive, the widget says when it is cut off, no event is
dropped for its size, and the admin's own links lead to full session pages."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext

from sessions_monitor import embed
from sessions_monitor.textfit import LIMITS
from tests.e2e.dash import (
    Dash,
    dash_env,
    log_in,
    new_session,
    open_live,
    prepare_database,
    screenshot,
    serve,
)
from tests.support import free_port, service_missing

pytestmark = pytest.mark.browser


async def test_a_session_failing_while_live_is_open_stays_visible_with_its_code(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page, bot_name="Quarterly review")
    dash.control.emit(session_id, status="recording")
    await open_live(page, f"{dash.base_url}/?filter=live")
    await page.locator(f"#session-{session_id}").wait_for()

    dash.control.emit(
        session_id,
        status="failed",
        error_code="JOIN_TIMEOUT",
        error_message="the bot could not join",
    )
    recent = page.locator(f"#recent-{session_id}")
    await recent.wait_for(timeout=5000)
    await page.locator(f"#session-{session_id}").wait_for(state="detached", timeout=5000)
    code = recent.locator(".error-code")
    assert await code.inner_text() == "JOIN_TIMEOUT"
    assert "could not get into the meeting in time" in (await code.get_attribute("title") or "")
    assert "Failed" in await recent.inner_text()
    announced = await page.locator("#live-announcer").inner_text()
    assert "Quarterly review failed (JOIN_TIMEOUT)" in announced
    failed_chip = page.locator("#filter-chips .chip", has_text="Failed")
    assert await failed_chip.locator(".chip-count").inner_text() != "0"
    await screenshot(page, "live-recently-failed.png")

    # Searching for the code finds it; failed rows show it everywhere.
    await page.goto(f"{dash.base_url}/?filter=all&q=JOIN_TIMEOUT")
    row = page.locator(f"#session-{session_id}")
    await row.wait_for()
    assert await row.locator(".error-code").inner_text() == "JOIN_TIMEOUT"


ANNOUNCEMENTS_RECORDER = """() => {
  window.__announced = [];
  const region = document.getElementById("live-announcer");
  new MutationObserver(() => window.__announced.push(region.textContent)).observe(
    region, {childList: true, characterData: true, subtree: true});
}"""


async def test_a_session_the_upstream_forgets_is_shown_as_lost_contact_and_leaves_live(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page, bot_name="Forgotten bot")
    dash.control.emit(session_id, status="recording")
    await open_live(page, f"{dash.base_url}/?filter=live")
    await page.locator(f"#session-{session_id}").wait_for()

    # Every announcement, as it is made: another simulated session may be announced next.
    await page.evaluate(ANNOUNCEMENTS_RECORDER)
    dash.control.forget(session_id)  # Meeting Buddy answers 404 for it from now on
    await page.locator(f"#session-{session_id}").wait_for(state="detached", timeout=10_000)
    announced = await page.evaluate("window.__announced")
    assert any("Forgotten bot" in text and "lost contact" in text for text in announced), announced
    attention = page.locator("#filter-chips .chip", has_text="Needs attention")
    assert await attention.locator(".chip-count").inner_text() != "0"
    assert "lost contact" in (await page.locator("#upstream-link").inner_text()).lower()

    await page.goto(f"{dash.base_url}/?filter=attention")
    row = page.locator(f"#session-{session_id}")
    await row.wait_for()
    text = await row.inner_text()
    assert "Lost contact" in text and "last known: Recording" in text

    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    assert await page.locator("#lost-banner").is_visible()
    assert not await page.locator("#stale-banner").is_visible()
    panel_text = await page.locator("#failure-panel").inner_text()
    assert "Meeting Buddy no longer knows this session" in panel_text
    assert "last known" in panel_text
    duration = page.locator("#session-header [data-elapsed-from]")
    assert await duration.get_attribute("data-elapsed-to"), (
        "the duration stopped when contact was lost"
    )
    await screenshot(page, "session-lost-contact.png")


async def test_the_widget_stops_saying_live_within_seconds_of_being_cut_off(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page, bot_name="Embedded bot")
    dash.control.emit(session_id, status="recording")
    widget = await context.new_page()
    await widget.set_viewport_size({"width": embed.WIDGET_WIDTH, "height": embed.WIDGET_HEIGHT})
    await widget.goto(
        f"{dash.base_url}{embed.widget_path(session_id, embed.make_token(session_id))}"
    )
    await widget.locator('main[data-link="live"]').wait_for()
    assert await widget.locator("#embed-badge .status").inner_text() == "Recording"
    assert not await widget.locator("#embed-offline").is_visible()

    await context.set_offline(True)
    await widget.locator('main[data-link="offline"]').wait_for(timeout=5000)
    note = widget.locator("#embed-offline")
    assert await note.is_visible() and "Not live" in await note.inner_text()
    dot = widget.locator("#embed-badge .dot")
    assert await dot.evaluate("el => getComputedStyle(el).animationName") == "none"
    await screenshot(widget, "widget-offline.png")

    await context.set_offline(False)
    await widget.locator('main[data-link="live"]').wait_for(timeout=15_000)
    assert not await widget.locator("#embed-offline").is_visible()


async def test_the_widget_follows_the_theme_parameter(dash: Dash, context: BrowserContext) -> None:
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page)
    token = embed.make_token(session_id)
    colours = {}
    for theme in ("light", "dark"):
        await page.goto(f"{dash.base_url}{embed.widget_path(session_id, token)}&theme={theme}")
        colours[theme] = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert colours["light"] != colours["dark"]
    await page.goto(f"{dash.base_url}{embed.widget_path(session_id, token)}&link=1")
    href = await page.locator("a.open-link").get_attribute("href", timeout=5000)
    assert href is not None and href.endswith(f"/sessions/{session_id}/")


async def test_the_admin_session_page_reached_by_clicking_in_the_changelist_is_complete(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page, bot_name="Audited bot")
    for step in ({"status": "recording"}, {"join": "Alice"}, {"leave": "Alice"}):
        dash.control.emit(session_id, **step)
    await page.goto(f"{dash.base_url}/admin/sessions_monitor/meetingsession/?q={session_id}")
    await page.locator(f"th.field-session_id a:text-is('{session_id}')").click()
    await page.wait_for_load_state()
    await page.locator("#session-timeline svg").wait_for()
    assert await page.locator("#session-events tbody tr").count() >= 4
    assert "Alice" in await page.locator("#session-presences tbody").inner_text()


@pytest.fixture
def dash_on_postgres(tmp_path: Path) -> Iterator[Dash]:
    """The dashboard on a scratch PostgreSQL database, where column limits apply."""
    import os

    import psycopg

    admin_url = os.getenv("MEETINGDASH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"meetingdash_truth_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        service_missing(f"PostgreSQL unreachable at {admin_url}: {type(exc).__name__}")
    from sessions_monitor.simulator.control import SimulatorControl

    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            env = dash_env(
                tmp_path / "unused.sqlite3", DATABASE_URL=admin_url.rsplit("/", 1)[0] + f"/{name}"
            )
            prepare_database(env)
            port = free_port()
            with serve(env, port) as process:
                control = SimulatorControl(process.base_url + "/_simulator")
                try:
                    yield Dash(process.base_url, tmp_path / "unused.sqlite3", control, process)
                finally:
                    control.close()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
async def test_a_ten_thousand_character_name_on_postgresql_is_stored_cut_and_the_next_event_arrives(
    dash_on_postgres: Dash, context: BrowserContext
) -> None:
    dash = dash_on_postgres
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = f"mbsess_e2e{uuid.uuid4().hex[:10]}"
    dash.control.create_session(session_id=session_id, manual=True)
    await page.goto(f"{dash.base_url}/?filter=all")
    await page.locator(f"#session-{session_id}").wait_for(timeout=15_000)
    dash.control.emit(session_id, status="recording")
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    dash.control.emit(session_id, join="Ω" * 10_000)
    dash.control.emit(session_id, join="Next")
    people = page.locator("#participants .person")
    await people.filter(has_text="Next").wait_for(timeout=5000)
    names = await people.all_inner_texts()
    long_name = next(name for name in names if name.startswith("Ω"))
    assert len(long_name) == LIMITS["participant_name"] and "[cut, 10,000 characters]" in long_name


async def test_times_are_unambiguous_and_presence_says_how_it_was_learnt(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    session_id = f"mbsess_e2e{uuid.uuid4().hex[:10]}"
    # People already in the meeting before MeetingDash watches it.
    dash.control.create_session(session_id=session_id, manual=True)
    for step in ({"status": "recording"}, {"join": "Early Bird"}):
        dash.control.emit(session_id, **step)
    page = await context.new_page()
    await log_in(page, dash.base_url)
    await page.goto(f"{dash.base_url}/?filter=all")
    await page.locator(f"#session-{session_id}").wait_for(timeout=15_000)
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    dash.control.emit(session_id, join="Late Comer")
    rows = page.locator("#presence-rows [role=row]")
    await rows.filter(has_text="Late Comer").wait_for(timeout=5000)
    early = rows.filter(has_text="Early Bird")
    assert "Present when watching began" in await early.inner_text()
    late_text = await rows.filter(has_text="Late Comer").inner_text()
    assert "Present when watching began" not in late_text
    assert await early.locator("[data-elapsed-from]").count() == 1, (
        "an open presence keeps counting"
    )
    absolute = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \w+")
    # Every time says its date and zone: on hover (title), or in its own text.
    shown = await page.locator("#main time").evaluate_all(
        "els => els.map(e => e.title + ' | ' + e.textContent)"
    )
    assert shown and all(absolute.search(text) for text in shown), shown
