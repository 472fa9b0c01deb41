"""The live dashboard in a real Chromium against a real `serve` with the upstream simulator.

Every page here is driven the way a user does: log in, open pages, watch them change. The
simulator is steered through its control API; stored history is read straight from the
server's SQLite file, so "the timeline equals the stored history" is checked against the
real thing.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.dash import (
    STALL_SECONDS,
    Dash,
    dash_env,
    log_in,
    new_session,
    open_live,
    page_seqs,
    prepare_database,
    screenshot,
    serve,
    wait_until,
)
from tests.support import free_port

pytestmark = pytest.mark.browser


def test_log_in_and_see_the_simulated_sessions(dash: Dash, context: Any) -> None:
    page = context.new_page()
    page.goto(dash.base_url + "/")
    assert page.url.startswith(f"{dash.base_url}/accounts/login/?next=/")
    log_in(page, dash.base_url, "/?filter=all")
    rows = page.locator("#session-rows .session-row")
    wait_until(lambda: rows.count() >= 3, what="three simulated sessions in the list")
    first = rows.first
    assert first.locator(".badge").inner_text().strip()  # a status badge with text
    assert first.locator(".session-link").inner_text().strip()
    page.locator('#browser-link[data-state="live"]').wait_for()
    page.locator("#upstream-link").wait_for()
    screenshot(page, "session-list.png")


def test_the_list_adds_new_sessions_and_lets_finished_ones_go_live(
    dash: Dash, context: Any
) -> None:
    assert dash.control is not None
    page = context.new_page()
    log_in(page, dash.base_url, "/?filter=live")
    page.locator('#browser-link[data-state="live"]').wait_for()
    page.evaluate("window.__notReloaded = true")
    session_id = f"mbsess_e2elist{uuid.uuid4().hex[:8]}"
    dash.control.create_session(session_id=session_id, manual=True, bot_name="Brand new bot")
    row = page.locator(f"#session-{session_id}")
    row.wait_for(timeout=10_000)  # discovered by the relay, pushed to the open list
    assert page.locator("#session-rows .session-row").first.get_attribute(
        "id"
    ) == row.get_attribute("id")
    dash.control.emit(session_id, status="active")
    row.locator(".badge", has_text="In meeting").wait_for(timeout=5000)
    dash.control.emit(session_id, status="completed")
    row.wait_for(state="detached", timeout=5000)  # no longer live: it leaves this filter
    assert page.evaluate("window.__notReloaded") is True


def test_a_status_change_and_a_join_appear_live_within_a_second(dash: Dash, context: Any) -> None:
    assert dash.control is not None
    page = context.new_page()
    log_in(page, dash.base_url)
    session_id = new_session(
        dash,
        page,
        bot_name="Weekly sync bot",
        platform="google_meet",
        meeting_link="https://meet.google.com/abc-defg-hij",
    )
    open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    page.evaluate("window.__notReloaded = true")
    badge = page.locator("#session-header .badge").first

    dash.control.emit(session_id, status="joining")
    started = time.monotonic()
    badge.filter(has_text="Joining").wait_for(timeout=1000)
    dash.control.emit(session_id, status="active")
    badge.filter(has_text="In meeting").wait_for(timeout=1000)
    dash.control.emit(session_id, join="Grace Hopper")
    page.locator("#participants .person", has_text="Grace Hopper").wait_for(timeout=1000)
    elapsed = time.monotonic() - started
    assert elapsed < 3.5, f"three live updates took {elapsed:.2f}s"
    assert page.evaluate("window.__notReloaded") is True

    # A little more history, spread out, for the timeline (and the screenshot).
    for step in ({"join": "Linus"}, {"status": "recording"}, {"leave": "Grace Hopper"}):
        page.wait_for_timeout(600)
        dash.control.emit(session_id, **step)
    page.wait_for_timeout(600)
    dash.control.emit(session_id, join="Grace Hopper")  # a rejoin: a new interval
    page.locator("#participants .person", has_text="Linus").wait_for(timeout=1000)
    page.locator(".presence-table tbody tr").nth(2).wait_for(timeout=1000)
    wait_until(lambda: page_seqs(page) == dash.stored_seqs(session_id), 5, "rows == history")
    assert page.locator("#svg-timeline rect.bar").count() >= 4
    assert page.locator("#live-announcer").inner_text().strip()
    screenshot(page, "session-detail-live.png")


def test_a_failed_session_shows_its_failure_panel(dash: Dash, context: Any) -> None:
    assert dash.control is not None
    page = context.new_page()
    log_in(page, dash.base_url)
    session_id = new_session(dash, page, bot_name="Board meeting bot", platform="teams")
    open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    dash.control.emit(session_id, status="joining")
    page.wait_for_timeout(700)  # spread out a little, for the timeline and the screenshot
    dash.control.emit(session_id, status="waiting")
    page.wait_for_timeout(1200)
    dash.control.emit(
        session_id,
        status="failed",
        error_code="WAITING_ROOM_TIMEOUT",
        error_message="Bot was not admitted from the waiting room",
    )
    panel = page.locator("#failure-panel")
    panel.filter(has_text="This session failed").wait_for(timeout=5000)
    text = panel.inner_text()
    assert "WAITING_ROOM_TIMEOUT" in text
    assert "Bot was not admitted from the waiting room" in text
    assert "In waiting room" in text  # the status it failed from
    assert "nobody admitted it in time" in text  # the plain-language explanation
    page.reload()  # and the first render shows the same
    assert "WAITING_ROOM_TIMEOUT" in page.locator("#failure-panel").inner_text()
    page.locator('#browser-link[data-state="live"]').wait_for()
    screenshot(page, "session-detail-failed.png")


def test_a_hostile_participant_name_is_shown_as_text_and_runs_nothing(
    dash: Dash, context: Any
) -> None:
    assert dash.control is not None
    dialogs: list[str] = []
    page = context.new_page()

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    log_in(page, dash.base_url)
    session_id = new_session(dash, page)
    open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    name = "<img src=x onerror=alert(1)>"
    dash.control.emit(session_id, join=name)
    person = page.locator("#participants .person").first
    person.wait_for(timeout=5000)
    assert person.inner_text() == name
    page.reload()
    assert page.locator("#participants .person").first.inner_text() == name
    page.goto(f"{dash.base_url}/?filter=all&q=onerror")
    page.wait_for_timeout(500)
    assert page.locator("img").count() == 0
    assert dialogs == []


def test_anonymous_is_sent_to_login_and_its_live_connection_closed_as_forbidden(
    dash: Dash, context: Any
) -> None:
    page = context.new_page()
    page.goto(dash.base_url + "/sessions/mbsess_anything/")
    assert page.url.startswith(f"{dash.base_url}/accounts/login/")
    outcome = page.evaluate(
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


def test_the_upstream_stale_badge_appears_when_the_simulator_stalls(
    dash: Dash, context: Any
) -> None:
    assert dash.control is not None
    page = context.new_page()
    log_in(page, dash.base_url)
    session_id = new_session(dash, page)
    dash.control.emit(session_id, status="active")
    open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    page.locator('#upstream-link[data-state="live"]').wait_for()
    assert not page.locator("#stale-banner").is_visible()

    dash.control.set_faults(session_id=session_id, stall={"seconds": 8, "keepalives": False})
    stale = page.locator("#upstream-link[data-stale]")
    stale.wait_for(timeout=(STALL_SECONDS + 4) * 1000)
    assert "stale since" in stale.inner_text()
    assert page.locator("#stale-banner").is_visible()
    # The header is marked stale too (re-queried each time: live updates replace it).
    page.wait_for_function(
        """() => {
            const header = document.querySelector('#session-header');
            return header && getComputedStyle(header, '::before').content === '"Stale"';
        }""",
        timeout=3000,
    )
    dash.control.reset_faults()
    page.locator('#upstream-link[data-state="live"]').wait_for(timeout=20_000)
    assert not page.locator("#stale-banner").is_visible()


def test_while_the_browser_is_offline_the_badge_says_so_and_nothing_is_lost_or_doubled(
    dash: Dash, context: Any
) -> None:
    assert dash.control is not None
    page = context.new_page()
    log_in(page, dash.base_url)
    session_id = new_session(dash, page)
    dash.control.emit(session_id, status="active")
    open_live(page, f"{dash.base_url}/sessions/{session_id}/")
    wait_until(lambda: page_seqs(page) == dash.stored_seqs(session_id), 5, "rows == history")

    context.set_offline(True)
    page.locator('#browser-link[data-state="offline"]').wait_for(timeout=2000)
    assert page.locator("#stale-banner").is_visible()
    for n in range(6):
        dash.control.emit(session_id, join=f"Offline {n}")
    wait_until(lambda: len(dash.stored_seqs(session_id)) >= 8, 5, "events stored meanwhile")
    page.wait_for_timeout(300)
    assert "Offline 5" not in page.locator("#participants").inner_text()

    context.set_offline(False)
    page.locator('#browser-link[data-state="live"]').wait_for(timeout=10_000)
    dash.control.emit(session_id, leave="Offline 0")
    page.locator("#participants .person", has_text="Offline 5").wait_for(timeout=5000)
    wait_until(
        lambda: page_seqs(page) == dash.stored_seqs(session_id), 10, "rows == stored history"
    )
    rows = page_seqs(page)
    assert rows == list(range(1, len(rows) + 1))
    assert not page.locator("#stale-banner").is_visible()


def test_after_the_server_restarts_the_timeline_equals_stored_history(
    simulator_server: Any, chromium: Any
) -> None:
    """Cut the browser's link by stopping `serve`, make events while it is away, restore.

    The upstream here is a separate simulator process, so it (and the session) outlives the
    dashboard's restart, as Meeting Buddy would.
    """
    control = simulator_server.control
    with tempfile.TemporaryDirectory(prefix="meetingdash-e2e-cut-") as tmp:
        db_path = Path(tmp) / "db.sqlite3"
        env = dash_env(db_path, MEETINGBUDDY_API_URL=simulator_server.base_url)
        prepare_database(env)
        port = free_port()
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(20_000)
        try:
            with serve(env, port) as process:
                dash = Dash(process.base_url, db_path, None, process)
                page = context.new_page()
                log_in(page, dash.base_url)
                session_id = f"mbsess_cut{uuid.uuid4().hex[:10]}"
                control.create_session(session_id=session_id, manual=True, bot_name="Cut test")
                url = f"{dash.base_url}/sessions/{session_id}/"
                wait_until(lambda: page.request.get(url).status == 200, what="session watched")
                control.emit(session_id, status="joining")
                control.emit(session_id, status="active")
                open_live(page, url)
                control.emit(session_id, join="Before Cut")
                page.locator("#participants .person", has_text="Before Cut").wait_for()

            # The server is down: the browser says so and marks the data stale.
            page.locator('#browser-link[data-state="reconnecting"]').wait_for(timeout=5000)
            assert "reconnecting" in page.locator("#browser-link").inner_text().lower()
            assert page.locator("#stale-banner").is_visible()
            before = page_seqs(page)
            connections = control.stats()["stream_connections_total"].get(session_id, 0)

            with serve(env, port) as process:
                # The relay resumes the session upstream; events it stores while this page is
                # still away (the browser retries with backoff), then more once it is back.
                wait_until(
                    lambda: (
                        control.stats()["stream_connections_total"].get(session_id, 0) > connections
                    ),
                    what="the relay to reconnect upstream",
                )
                for n in range(5):
                    control.emit(session_id, join=f"During {n}")
                page.locator('#browser-link[data-state="live"]').wait_for(timeout=20_000)
                control.emit(session_id, leave="During 0")
                control.emit(session_id, join="After Restore")
                page.locator("#participants .person", has_text="After Restore").wait_for()
                stored = wait_until(
                    lambda: (s := dash.stored_seqs(session_id)) and page_seqs(page) == s and s,
                    20,
                    "the page's rows to equal the stored history",
                )
                rows = page_seqs(page)
                assert rows == stored
                assert len(rows) == len(set(rows)) and rows == list(range(1, len(rows) + 1))
                assert rows[: len(before)] == before
                names = page.locator("#participants .person").all_inner_texts()
                assert "During 0" not in names and "During 4" in names
                assert not page.locator("#stale-banner").is_visible()
        finally:
            context.close()


def test_no_page_breaks_the_content_security_policy(dash: Dash, context: Any) -> None:
    """Every page, the admin's included, runs under the strict CSP without a violation (the
    browser reports each blocked script, style or eval on the console)."""
    violations: list[str] = []
    page = context.new_page()
    page.on(
        "console",
        lambda message: (
            violations.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    page.goto(dash.base_url + "/accounts/login/")
    page.wait_for_load_state("networkidle")
    log_in(page, dash.base_url)
    session_id = new_session(dash, page, bot_name="CSP check")
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
    ):
        response = page.goto(dash.base_url + path)
        assert response is not None and response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
    # The detail page's staff tools load the snippet (and its preview iframe) through htmx.
    page.goto(f"{dash.base_url}/sessions/{session_id}/")
    page.click("text=Embed this status…")
    page.locator("#embed-snippet-slot iframe.embed-preview").wait_for()
    page.frame_locator("#embed-snippet-slot iframe").locator("#embed-badge").wait_for()
    page.wait_for_load_state("networkidle")
    assert violations == []
