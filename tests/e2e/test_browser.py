"""The live dashboard in a real Chromium against a real `serve` with the upstream simulator.

Every page here is driven the way a user does: log in, open pages, watch them change. The
simulator is steered through its control API; stored history is read straight from the
server's SQLite file, so "the timeline equals the stored history" is checked against the
real thing.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Dialog, expect

from tests.e2e.dash import (
    STALL_SECONDS,
    Dash,
    dash_env,
    log_in,
    new_context,
    new_session,
    open_live,
    page_seqs,
    prepare_database,
    screenshot,
    serving,
    wait_rows_equal_history,
    wait_watched,
)
from tests.support import eventually, free_port

pytestmark = pytest.mark.browser


async def test_log_in_and_see_the_simulated_sessions(dash: Dash, context: BrowserContext) -> None:
    page = await context.new_page()
    await page.goto(dash.base_url + "/")
    assert page.url.startswith(f"{dash.base_url}/accounts/login/?next=/")
    await log_in(page, dash.base_url, "/?filter=all")
    rows = page.locator("#session-rows .session-row")
    await rows.nth(2).wait_for()  # three simulated sessions in the list
    first = rows.first
    assert (await first.locator(".badge").inner_text()).strip()  # a status badge with text
    assert (await first.locator(".session-link").inner_text()).strip()
    await page.locator('#browser-link[data-state="live"]').wait_for()
    await page.locator("#upstream-link").wait_for()
    await screenshot(page, "session-list.png")


async def test_the_list_adds_new_sessions_and_lets_finished_ones_go_live(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url, "/?filter=live")
    await page.locator('#browser-link[data-state="live"]').wait_for()
    await page.evaluate("window.__notReloaded = true")
    session_id = f"mbsess_e2elist{uuid.uuid4().hex[:8]}"
    dash.control.create_session(session_id=session_id, manual=True, bot_name="Brand new bot")
    row = page.locator(f"#session-{session_id}")
    await row.wait_for(timeout=10_000)  # discovered by the relay, pushed to the open list
    assert await page.locator("#session-rows .session-row").first.get_attribute(
        "id"
    ) == await row.get_attribute("id")
    dash.control.emit(session_id, status="active")
    await row.locator(".badge", has_text="In meeting").wait_for(timeout=5000)
    dash.control.emit(session_id, status="completed")
    await row.wait_for(state="detached", timeout=5000)  # no longer live: it leaves this filter
    assert await page.evaluate("window.__notReloaded") is True


async def test_a_status_change_and_a_join_appear_live_within_a_second(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(
        dash,
        page,
        bot_name="Weekly sync bot",
        platform="google_meet",
        meeting_link="https://meet.google.com/abc-defg-hij",
    )
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    await page.evaluate("window.__notReloaded = true")
    badge = page.locator("#session-header .badge").first

    dash.control.emit(session_id, status="joining")
    started = time.monotonic()
    await badge.filter(has_text="Joining").wait_for(timeout=1000)
    dash.control.emit(session_id, status="active")
    await badge.filter(has_text="In meeting").wait_for(timeout=1000)
    dash.control.emit(session_id, join="Grace Hopper")
    await page.locator("#participants .person", has_text="Grace Hopper").wait_for(timeout=1000)
    elapsed = time.monotonic() - started
    assert elapsed < 3.5, f"three live updates took {elapsed:.2f}s"
    assert await page.evaluate("window.__notReloaded") is True

    # A little more history, spread out in time (not a wait for anything): the timeline's
    # bars and the screenshot need intervals of some width.
    for step in ({"join": "Linus"}, {"status": "recording"}, {"leave": "Grace Hopper"}):
        await asyncio.sleep(0.6)
        dash.control.emit(session_id, **step)
    await asyncio.sleep(0.6)
    dash.control.emit(session_id, join="Grace Hopper")  # a rejoin: a new interval
    await page.locator("#participants .person", has_text="Linus").wait_for(timeout=1000)
    await page.locator("#presence-rows [role=row]").nth(2).wait_for(timeout=1000)
    await wait_rows_equal_history(dash, page, session_id, 5)
    assert await page.locator("#svg-timeline rect.bar").count() >= 4
    assert (await page.locator("#live-announcer").inner_text()).strip()
    await screenshot(page, "session-detail-live.png")


async def test_a_failed_session_shows_its_failure_panel(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page, bot_name="Board meeting bot", platform="teams")
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    # Spread out in time (not a wait for anything), for the timeline and the screenshot.
    dash.control.emit(session_id, status="joining")
    await asyncio.sleep(0.7)
    dash.control.emit(session_id, status="waiting")
    await asyncio.sleep(1.2)
    dash.control.emit(
        session_id,
        status="failed",
        error_code="WAITING_ROOM_TIMEOUT",
        error_message="Bot was not admitted from the waiting room",
    )
    panel = page.locator("#failure-panel")
    await panel.filter(has_text="This session failed").wait_for(timeout=5000)
    text = await panel.inner_text()
    assert "WAITING_ROOM_TIMEOUT" in text
    assert "Bot was not admitted from the waiting room" in text
    assert "In waiting room" in text  # the status it failed from
    assert "nobody admitted it in time" in text  # the plain-language explanation
    await page.reload()  # and the first render shows the same
    assert "WAITING_ROOM_TIMEOUT" in await page.locator("#failure-panel").inner_text()
    await page.locator('#browser-link[data-state="live"]').wait_for()
    await screenshot(page, "session-detail-failed.png")


async def test_a_hostile_participant_name_is_shown_as_text_and_runs_nothing(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    dialogs: list[str] = []
    page = await context.new_page()

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page)
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    name = "<img src=x onerror=alert(1)>"
    dash.control.emit(session_id, join=name)
    person = page.locator("#participants .person").first
    await person.wait_for(timeout=5000)
    assert await person.inner_text() == name
    await page.reload()
    assert await page.locator("#participants .person").first.inner_text() == name
    await page.goto(f"{dash.base_url}/?filter=all&q=onerror")
    # The search found the session by that name, and the page's live channel is up: had the
    # name been parsed as HTML, its <img> would be in the page by now.
    await page.locator(f"#session-{session_id}").wait_for()
    await page.locator('#browser-link[data-state="live"]').wait_for()
    assert await page.locator("img").count() == 0
    assert dialogs == []


async def test_anonymous_is_sent_to_login_and_its_live_connection_closed_as_forbidden(
    dash: Dash, context: BrowserContext
) -> None:
    page = await context.new_page()
    await page.goto(dash.base_url + "/sessions/mbsess_anything/")
    assert page.url.startswith(f"{dash.base_url}/accounts/login/")
    outcome = await page.evaluate(
        """url => new Promise(resolve => {
            const socket = new WebSocket(url);
            let opened = false;
            socket.onopen = () => { opened = true; };
            socket.onclose = event => resolve({opened, code: event.code});
            setTimeout(() => resolve({opened, code: 'timeout'}), 5000);
        })""",
        dash.base_url.replace("http://", "ws://") + "/ws/sessions/",
    )
    # Accepted and closed at once with 4403 (nothing sent): the page can tell "signed out"
    # from a network error, which it would retry for ever.
    assert outcome == {"opened": True, "code": 4403}


async def test_the_upstream_stale_badge_appears_when_the_simulator_stalls(
    dash: Dash, context: BrowserContext
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page)
    dash.control.emit(session_id, status="active")
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    await page.locator('#upstream-link[data-state="live"]').wait_for()
    assert not await page.locator("#stale-banner").is_visible()

    dash.control.set_faults(session_id=session_id, stall={"seconds": 8, "keepalives": False})
    stale = page.locator("#upstream-link[data-stale]")
    await stale.wait_for(timeout=(STALL_SECONDS + 4) * 1000)
    assert "stale since" in await stale.inner_text()
    assert await page.locator("#stale-banner").is_visible()
    # The header is marked stale too (re-queried each time: live updates replace it).
    await page.wait_for_function(
        """() => {
            const header = document.querySelector('#session-header');
            return header && getComputedStyle(header, '::before').content === '"Stale"';
        }""",
        timeout=3000,
    )
    dash.control.reset_faults()
    await page.locator('#upstream-link[data-state="live"]').wait_for(timeout=20_000)
    assert not await page.locator("#stale-banner").is_visible()


async def test_while_the_browser_is_offline_the_badge_says_so_and_nothing_is_lost_or_doubled(
    dash: Dash, context: BrowserContext, chromium: Browser
) -> None:
    assert dash.control is not None
    page = await context.new_page()
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page)
    dash.control.emit(session_id, status="active")
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    await wait_rows_equal_history(dash, page, session_id, 5)
    # A second browser, online, on the same page: what it shows has been sent.
    witness_context = await new_context(chromium)
    try:
        witness = await witness_context.new_page()
        await log_in(witness, dash.base_url)
        await open_live(witness, f"{dash.base_url}/sessions/{session_id}/")

        await context.set_offline(True)
        await page.locator('#browser-link[data-state="offline"]').wait_for(timeout=2000)
        assert await page.locator("#stale-banner").is_visible()
        for n in range(6):
            dash.control.emit(session_id, join=f"Offline {n}")
        await eventually(
            lambda: len(dash.stored_seqs(session_id)) >= 8, 5, "events stored meanwhile"
        )
        await expect(witness.locator("#participants")).to_contain_text("Offline 5")
        assert "Offline 5" not in await page.locator("#participants").inner_text()
    finally:
        await witness_context.close()

    await context.set_offline(False)
    await page.locator('#browser-link[data-state="live"]').wait_for(timeout=10_000)
    dash.control.emit(session_id, leave="Offline 0")
    await page.locator("#participants .person", has_text="Offline 5").wait_for(timeout=5000)
    rows = await wait_rows_equal_history(dash, page, session_id, 10)
    assert rows == list(range(1, len(rows) + 1))
    assert not await page.locator("#stale-banner").is_visible()


async def test_after_the_server_restarts_the_timeline_equals_stored_history(
    simulator_server: Any, chromium: Browser
) -> None:
    """Cut the browser's link by stopping `serve`, make events while it is away, restore.

    The upstream here is a separate simulator process, so it (and the session) outlives the
    dashboard's restart, as Meeting Buddy would.
    """
    control = simulator_server.control
    with tempfile.TemporaryDirectory(prefix="meetingdash-e2e-cut-") as tmp:
        db_path = Path(tmp) / "db.sqlite3"
        env = dash_env(db_path, MEETINGBUDDY_API_URL=simulator_server.base_url)
        await asyncio.to_thread(prepare_database, env)
        port = free_port()
        context = await new_context(chromium)
        context.set_default_timeout(20_000)
        try:
            async with serving(env, port) as process:
                dash = Dash(process.base_url, db_path, None, process)
                page = await context.new_page()
                await log_in(page, dash.base_url)
                session_id = f"mbsess_cut{uuid.uuid4().hex[:10]}"
                control.create_session(session_id=session_id, manual=True, bot_name="Cut test")
                await wait_watched(dash, page, session_id)
                control.emit(session_id, status="joining")
                control.emit(session_id, status="active")
                await open_live(page, f"{dash.base_url}/sessions/{session_id}/")
                control.emit(session_id, join="Before Cut")
                await page.locator("#participants .person", has_text="Before Cut").wait_for()

            # The server is down: the browser says so and marks the data stale.
            await page.locator('#browser-link[data-state="reconnecting"]').wait_for(timeout=5000)
            assert "reconnecting" in (await page.locator("#browser-link").inner_text()).lower()
            assert await page.locator("#stale-banner").is_visible()
            before = await page_seqs(page)
            connections = control.stats()["stream_connections_total"].get(session_id, 0)

            async with serving(env, port) as process:
                # The relay resumes the session upstream; events it stores while this page is
                # still away (the browser retries with backoff), then more once it is back.
                await eventually(
                    lambda: (
                        control.stats()["stream_connections_total"].get(session_id, 0) > connections
                    ),
                    15,
                    "the relay to reconnect upstream",
                )
                for n in range(5):
                    control.emit(session_id, join=f"During {n}")
                await page.locator('#browser-link[data-state="live"]').wait_for(timeout=20_000)
                control.emit(session_id, leave="During 0")
                control.emit(session_id, join="After Restore")
                await page.locator("#participants .person", has_text="After Restore").wait_for()
                stored = await wait_rows_equal_history(dash, page, session_id, 20)
                rows = await page_seqs(page)
                assert rows == stored
                assert len(rows) == len(set(rows)) and rows == list(range(1, len(rows) + 1))
                assert rows[: len(before)] == before
                names = await page.locator("#participants .person").all_inner_texts()
                assert "During 0" not in names and "During 4" in names
                assert not await page.locator("#stale-banner").is_visible()
        finally:
            await context.close()


async def test_no_page_breaks_the_content_security_policy(
    dash: Dash, context: BrowserContext
) -> None:
    """Every page, the admin's included, runs under the strict CSP without a violation (the
    browser reports each blocked script, style or eval on the console)."""
    violations: list[str] = []
    page = await context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    await page.goto(dash.base_url + "/accounts/login/")
    await page.wait_for_load_state("networkidle")
    await log_in(page, dash.base_url)
    session_id = await new_session(dash, page, bot_name="CSP check")
    for path in (
        "/",
        f"/sessions/{session_id}/",
        f"/embed/sessions/{session_id}/snippet/",
        "/admin/",
        "/admin/sessions_monitor/meetingsession/",
        f"/admin/sessions_monitor/meetingsession/{session_id}/change/",
        "/admin/sessions_monitor/sessionevent/",
        "/admin/sessions_monitor/apitoken/add/",
        "/admin/sessions_monitor/meetingsession/revoke-all-widget-links/",
        "/insights/",
        "/insights/?range=7d&platform=zoom",
        "/alerts/",
        "/follows/",
        "/?filter=all&platform=zoom&sort=-duration",
        "/admin/sessions_monitor/alertrule/",
        "/admin/sessions_monitor/alertrule/add/",
        "/admin/sessions_monitor/alertdelivery/",
    ):
        response = await page.goto(dash.base_url + path)
        assert response is not None and response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        await page.wait_for_load_state("networkidle")
    # The detail page's staff tools load the snippet (and its preview iframe) through htmx.
    await page.goto(f"{dash.base_url}/sessions/{session_id}/")
    await page.click("text=Embed this status…")
    await page.locator("#embed-snippet-slot iframe.embed-preview").wait_for()
    await page.frame_locator("#embed-snippet-slot iframe").locator("#embed-badge").wait_for()
    await page.wait_for_load_state("networkidle")
    assert violations == []
