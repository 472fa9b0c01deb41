"""Operating bots in a real Chromium against a real `serve` (embedded relay and simulator):
send a bot from the form and watch it join, stop it from its live page and watch it end,
the audit trail of both; and what a user without the permission sees.

The simulator gives every session started through its API a generated scenario drawn from
its seed and a per-process count. With seed 77 the first eight are all meetings that go on
for minutes ("ordinary" or "long"), so a bot sent here joins and is still in the meeting when
it is stopped, whatever order these tests run in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Page, expect

from tests.e2e.dash import (
    Dash,
    csp_violations,
    new_context,
    new_session,
    running_dash,
    screenshot,
)
from tests.e2e.test_accessibility import describe, violations

pytestmark = pytest.mark.browser

OPERATOR, VIEWER, PASSWORD = "olga-operator", "vic-viewer", "pw-e2e-control-123"
MEETING = "https://meet.google.com/abc-defg-hij"
ADD_USERS = f"""
from django.contrib.auth.models import Permission, User
permission = Permission.objects.get(content_type__app_label="sessions_monitor", codename="control_session")
User.objects.create_user({OPERATOR!r}, password={PASSWORD!r}).user_permissions.add(permission)
User.objects.create_user({VIEWER!r}, password={PASSWORD!r})
"""


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    """`serve` as in tests/e2e/conftest.py, with seed 77 (see above), scenarios at double
    speed, an operator who has the control permission and a viewer who has not."""
    with running_dash(
        "meetingdash-e2e-control-",
        shell=ADD_USERS,
        MEETINGDASH_SIMULATOR_SEED="77",
        MEETINGDASH_SIMULATOR_SPEED="2",
    ) as dash:
        yield dash


async def log_in_as(page: Page, dash: Dash, username: str, next_path: str = "/") -> None:
    await page.goto(f"{dash.base_url}/accounts/login/?next={next_path}")
    await page.fill("#id_username", username)
    await page.fill("#id_password", PASSWORD)
    await page.click("form.form button[type=submit]")
    await page.wait_for_url(f"{dash.base_url}{next_path}")


def accept_dialogs(page: Page) -> list[str]:
    """Accepts every dialog (hx-confirm's) on `page`; their messages, as they come."""
    messages: list[str] = []

    async def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    return messages


async def test_send_a_bot_watch_it_join_stop_it_and_watch_it_end(
    dash: Dash, context: BrowserContext
) -> None:
    page = await context.new_page()
    blocked = csp_violations(page)
    confirms = accept_dialogs(page)
    await log_in_as(page, dash, OPERATOR)
    await expect(page.locator(".nav a", has_text="Send a bot")).to_be_visible()
    await page.click(".page-head a.send-link")
    await page.wait_for_url(f"{dash.base_url}/sessions/new/")

    await page.fill("#id_meeting_link", MEETING)
    await page.fill("#id_bot_name", "E2E scribe")
    await page.select_option("#id_transcription_language", "de")
    await screenshot(page, "send-bot.png")
    await page.fill("#id_meeting_link", "https://example.com/not-a-meeting")
    await page.click("form.control-form button[type=submit]")
    await expect(page.locator("#meeting-link-error")).to_contain_text("Enter an HTTPS link")
    assert await page.locator("#id_bot_name").input_value() == "E2E scribe"  # kept
    assert await page.locator("#id_transcription_language").input_value() == "de"
    await page.fill("#id_meeting_link", MEETING)
    await page.click("form.control-form button[type=submit]")

    await page.wait_for_url(f"{dash.base_url}/sessions/mbsess_*/")
    await expect(page.locator(".message-success")).to_contain_text("Bot sent")
    await page.locator('#browser-link[data-state="live"]').wait_for()
    await page.evaluate("window.__notReloaded = true")
    badge = page.locator("#session-header .badge").first
    await badge.filter(has_text="In meeting").wait_for(timeout=30_000)
    assert "E2E scribe" in await page.locator("#session-title").inner_text()

    await page.click("#control-tools button:has-text('Stop bot')")
    await expect(page.locator("#control-tools")).to_contain_text(
        "Stop requested; the bot is leaving."
    )
    await badge.filter(has_text="Completed").wait_for(timeout=10_000)
    assert confirms and "Stop this bot?" in confirms[0]
    assert await page.evaluate("window.__notReloaded") is True
    await expect(page.locator("#control-tools .stop-form")).to_have_count(0)

    rows = page.locator("#audit-trail tbody tr")
    await expect(rows).to_have_count(2)
    assert "Stop a bot" in await rows.nth(0).inner_text()
    assert "Send a bot" in await rows.nth(1).inner_text()
    for row in (rows.nth(0), rows.nth(1)):
        await expect(row.locator(".audit-actor")).to_contain_text(OPERATOR)
        await expect(row.locator(".badge")).to_have_text("Done")
    await screenshot(page, "session-stopped-audit.png")
    await page.reload()  # and the first render of the ended session says the same
    await expect(page.locator("#audit-trail tbody tr")).to_have_count(2)
    await expect(page.locator("#control-tools button")).to_have_count(0)
    assert blocked == []


async def test_without_javascript_stop_asks_on_its_own_page(dash: Dash, chromium: Browser) -> None:
    context = await new_context(chromium, java_script_enabled=False)
    try:
        page = await context.new_page()
        await log_in_as(page, dash, OPERATOR)
        session_id = await new_session(dash, page, bot_name="No-JS bot", meeting_link=MEETING)
        assert dash.control is not None
        dash.control.emit(session_id, status="active")
        await page.goto(f"{dash.base_url}/sessions/{session_id}/")
        await page.click("#control-tools button:has-text('Stop bot')")
        # A GET form without fields: the address ends in "stop?".
        await page.wait_for_url(re.compile(rf"/sessions/{session_id}/stop\??$"))
        await expect(page.locator("h1")).to_have_text("Stop this bot?")
        await screenshot(page, "stop-confirm.png")
        await page.click("main form button:has-text('Stop bot')")
        await page.wait_for_url(f"{dash.base_url}/sessions/{session_id}/")
        await expect(page.locator(".message-success")).to_have_text(
            "Stop requested; the bot is leaving."
        )
        await expect(page.locator("#audit-trail tbody tr")).to_have_count(1)
    finally:
        await context.close()


async def test_a_user_without_the_permission_sees_neither_the_button_nor_the_send_link(
    dash: Dash, context: BrowserContext
) -> None:
    page = await context.new_page()
    await log_in_as(page, dash, VIEWER)
    await page.locator('#browser-link[data-state="live"]').wait_for()  # the page is all there
    assert await page.locator('a[href="/sessions/new/"]').count() == 0
    session_id = await new_session(dash, page, bot_name="Watched only", meeting_link=MEETING)
    assert dash.control is not None
    dash.control.emit(session_id, status="active")
    await page.goto(f"{dash.base_url}/sessions/{session_id}/")
    await page.locator('#browser-link[data-state="live"]').wait_for()
    await page.locator("#session-header .badge", has_text="In meeting").wait_for()
    await expect(page.locator("#audit-trail")).to_contain_text("Nobody has sent or stopped")
    assert await page.locator("#control-tools").count() == 0
    assert await page.locator("button", has_text="Stop bot").count() == 0
    assert await page.locator('a[href="/sessions/new/"]').count() == 0
    refused = await page.goto(f"{dash.base_url}/sessions/new/")
    assert refused is not None and refused.status == 403


async def test_the_control_pages_have_no_serious_accessibility_violation(
    dash: Dash, scheme_context: BrowserContext
) -> None:
    page = await scheme_context.new_page()
    await log_in_as(page, dash, OPERATOR)
    session_id = await new_session(dash, page, bot_name="Accessible bot", meeting_link=MEETING)
    # An audit row to check, and the bad link's field error.
    await page.request.post(
        f"{dash.base_url}/sessions/{session_id}/stop",
        headers={"x-csrftoken": await csrf_token(page)},
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for path in (f"/sessions/{session_id}/", "/sessions/new/"):
        await page.goto(dash.base_url + path)
        await page.wait_for_load_state("networkidle")
        found[path] = await violations(page)
    await page.fill("#id_meeting_link", "not a link")
    await page.click("form.control-form button[type=submit]")
    await page.locator("#meeting-link-error").wait_for()
    found["/sessions/new/ (with an error)"] = await violations(page)
    other = await new_session(dash, page, bot_name="To stop", meeting_link=MEETING)
    await page.goto(f"{dash.base_url}/sessions/{other}/stop")
    found["/stop (confirmation)"] = await violations(page)
    bad = {path: items for path, items in found.items() if items}
    assert not bad, "\n".join(f"{path}: {describe(items)}" for path, items in bad.items())


async def csrf_token(page: Page) -> str:
    cookies = await page.context.cookies()
    return next(cookie["value"] for cookie in cookies if cookie["name"] == "csrftoken")
