"""Following in a real Chromium against a real `serve` (embedded relay and simulator): follow
a session from its page, make it fail in the simulator, and see the toast and the browser
notification; a user who does not follow it gets no toast; following the bot name toasts too.

Notifications: the context grants the permission, and an init script wraps
`window.Notification` (keeping the real constructor) to record what the page showed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.dash import (
    Dash,
    csp_violations,
    log_in,
    new_context,
    new_session,
    open_live,
    running_dash,
    screenshot,
)
from tests.e2e.test_accessibility import describe, violations
from tests.support import eventually

pytestmark = pytest.mark.browser

BYSTANDER, BYSTANDER_PASSWORD = "bea-bystander", "pw-e2e-bystander-123"
ADD_USERS = f"""
from django.contrib.auth.models import User
User.objects.create_user({BYSTANDER!r}, password={BYSTANDER_PASSWORD!r})
"""
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  if (typeof Real !== "function") return;
  window.__notifications = [];
  function Recording(title, options) {
    window.__notifications.push({title: title, body: options && options.body, tag: options && options.tag});
    return new Real(title, options);
  }
  Recording.prototype = Real.prototype;
  Object.defineProperty(Recording, "permission", {get: () => Real.permission});
  window.__permissionAsks = 0;
  Recording.requestPermission = (...args) => {
    window.__permissionAsks += 1;
    return Real.requestPermission(...args);
  };
  window.Notification = Recording;
})();
"""


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    """`serve` as in tests/e2e/conftest.py, plus a second user (who follows nothing)."""
    with running_dash("meetingdash-e2e-follow-", shell=ADD_USERS) as dash:
        yield dash


async def log_in_as(page: Page, dash: Dash, username: str, password: str) -> None:
    await page.goto(f"{dash.base_url}/accounts/login/?next=/")
    await page.fill("#id_username", username)
    await page.fill("#id_password", password)
    await page.click("form.form button[type=submit]")
    await page.wait_for_url(f"{dash.base_url}/")


def fail(dash: Dash, session_id: str, code: str = "ADMISSION_DENIED") -> None:
    assert dash.control is not None
    dash.control.emit(
        session_id, status="failed", error_code=code, error_message="Host declined the bot"
    )


async def notifications(page: Page) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = await page.evaluate("window.__notifications || []")
    return shown


async def test_follow_a_session_see_the_toast_and_the_notification_when_it_fails(
    dash: Dash, context: BrowserContext
) -> None:
    await context.grant_permissions(["notifications"], origin=dash.base_url)
    await context.add_init_script(RECORD_NOTIFICATIONS)
    page = await context.new_page()
    blocked = csp_violations(page)
    await log_in(page, dash.base_url)
    bot = f"Board bot {uuid.uuid4().hex[:6]}"
    session_id = await new_session(dash, page, bot_name=bot, platform="teams")
    await open_live(page, f"{dash.base_url}/sessions/{session_id}/")

    follow = page.locator("#follow-tools button[data-follow-button]").first
    await expect(follow).to_have_attribute("aria-pressed", "false")
    await expect(follow).to_have_text("Follow")
    await follow.click()
    following = page.locator("#follow-tools button[aria-pressed='true']").first
    await expect(following).to_contain_text("Following")
    assert await page.evaluate("Notification.permission") == "granted"

    fail(dash, session_id)
    toast = page.locator("#toasts .toast", has_text=f"{bot} failed")
    await toast.wait_for(timeout=10_000)
    assert await toast.get_attribute("role") == "alert"
    text = await toast.inner_text()
    assert "ADMISSION_DENIED" in text and "Host declined the bot" in text
    link = toast.locator("a", has_text=f"{bot} failed")
    assert await link.get_attribute("href") == f"/sessions/{session_id}/"
    await toast.locator("time").wait_for()

    shown = await eventually(lambda: notifications(page), 5, "a browser notification")
    assert [n["title"] for n in shown] == [f"{bot} failed"]
    assert "Host declined the bot" in shown[0]["body"]
    assert shown[0]["tag"] == await toast.get_attribute("data-alert-id")
    if os.getenv("MEETINGDASH_SCREENSHOTS_DIR"):
        await screenshot(page, "follow-toast.png")
    found = await violations(page)
    assert found == [], describe(found)

    # A failure toast stays until dismissed.
    await toast.locator("[data-dismiss-toast]").click()
    await toast.wait_for(state="detached", timeout=5000)
    await page.goto(f"{dash.base_url}/follows/")
    await expect(page.locator(f"#follow-session-{session_id}")).to_contain_text(bot)
    await page.wait_for_load_state("networkidle")
    found = await violations(page)
    assert found == [], describe(found)
    assert blocked == []


async def test_who_does_not_follow_gets_no_toast_and_following_the_bot_name_toasts(
    dash: Dash, context: BrowserContext, chromium: Browser
) -> None:
    await context.add_init_script(RECORD_NOTIFICATIONS)  # permission not granted here
    follower = await context.new_page()
    follower_blocked = csp_violations(follower)
    await log_in(follower, dash.base_url)
    bot = f"Notetaker {uuid.uuid4().hex[:6]}"
    watched = await new_session(dash, follower, bot_name=bot)  # followed by its bot name
    other = await new_session(dash, follower, bot_name=f"Other {uuid.uuid4().hex[:6]}")
    await open_live(follower, f"{dash.base_url}/sessions/{watched}/")
    by_bot = follower.locator("#follow-tools button", has_text="Follow every session of")
    assert await follower.evaluate("Notification.permission") == "default"
    await by_bot.click()
    await expect(follower.locator("#follow-tools button[aria-pressed='true']")).to_contain_text(
        f"Following every session of {bot}"
    )
    # The first click of a follow button asked for the permission (a user gesture).
    assert await follower.evaluate("window.__permissionAsks") == 1

    bystander_context = await new_context(chromium)
    try:
        bystander = await bystander_context.new_page()
        await log_in_as(bystander, dash, BYSTANDER, BYSTANDER_PASSWORD)
        # The bystander follows only `other`, then watches `watched` live.
        await bystander.goto(f"{dash.base_url}/sessions/{other}/")
        await bystander.locator("#follow-tools button[data-follow-button]").first.click()
        await expect(bystander.locator("#follow-tools button").first).to_have_attribute(
            "aria-pressed", "true"
        )
        await open_live(bystander, f"{dash.base_url}/sessions/{watched}/")

        fail(dash, watched)
        await follower.locator("#toasts .toast", has_text=f"{bot} failed").wait_for(timeout=10_000)
        await bystander.locator("#failure-panel", has_text="This session failed").wait_for()
        # Alerts reach a page in order: once the bystander has the toast of the session it
        # follows, failed after `watched`, any toast about `watched` would be there before it.
        fail(dash, other, code="MEETING_ENDED")
        await bystander.locator("#toasts .toast", has_text="MEETING_ENDED").wait_for(timeout=10_000)
        assert await bystander.locator("#toasts .toast").count() == 1
        assert bot not in await bystander.locator("#toasts").inner_text()
    finally:
        await bystander_context.close()
    assert follower_blocked == []
