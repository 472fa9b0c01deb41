"""The demo's built-in alert receiver (MEETINGDASH_DEMO_ALERTS=1) and its two rules."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import clear_url_caches, reverse
from playwright.async_api import Browser
from standardwebhooks import Webhook

from sessions_monitor import checks
from sessions_monitor.alerts import demo, outbox, rules, secrets
from sessions_monitor.models import AlertRule
from sessions_monitor.simulator.control import SimulatorControl
from tests.e2e.dash import (
    Dash,
    dash_env,
    log_in,
    new_context,
    new_session,
    prepare_database,
    serving,
)
from tests.support import free_port, make_session


def _reload_urls() -> None:
    import meetingdash.urls
    import sessions_monitor.urls

    importlib.reload(sessions_monitor.urls)
    importlib.reload(meetingdash.urls)
    clear_url_caches()


@pytest.fixture
def demo_on(settings: Any) -> Iterator[None]:
    """The setting on, and the URL patterns read again (they are mounted at import)."""
    settings.MEETINGDASH_DEMO_ALERTS = True
    _reload_urls()
    demo.inbox.clear()
    yield
    demo.inbox.clear()
    settings.MEETINGDASH_DEMO_ALERTS = False
    _reload_urls()


def signed(secret: str, body: bytes, webhook_id: str = "msg_demo1") -> dict[str, str]:
    at = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
    }


def failure_body(session_id: str) -> bytes:
    payload = {
        "type": "session.failed",
        "timestamp": "2026-12-04T10:00:00.000000Z",
        "data": {
            "session_id": session_id,
            "status": "failed",
            "error_code": "JOIN_TIMEOUT",
            "text": f"Buddy ({session_id}) failed [JOIN_TIMEOUT]: the meeting never let it in",
        },
    }
    return json.dumps(payload).encode()


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db(transaction=True)
def test_it_verifies_a_signed_post_over_a_real_server_and_lists_it(
    demo_on: None, live_server: Any, admin_user: User
) -> None:
    new = rules.create_rule(
        name="Demo", trigger="failed", channel="webhook", target=live_server.url + demo.RECEIVE_PATH
    )
    assert new.secret
    body = failure_body("mbsess_demo1")
    url = live_server.url + demo.RECEIVE_PATH
    response = httpx.post(url, content=body, headers=signed(new.secret, body), timeout=10)
    assert response.status_code == 204

    page = logged_in(admin_user).get(reverse("demo-alerts"))
    assert page.status_code == 200
    text = page.content.decode()
    assert "session.failed" in text and "never let it in" in text and "msg_demo1" in text
    assert "✓ verified" in text and "✗ rejected" not in text
    assert reverse("session-detail", args=["mbsess_demo1"]) in text

    again = httpx.post(url, content=body, headers=signed(new.secret, body), timeout=10)
    assert again.status_code == 204
    assert "a retry: this webhook-id arrived before" in (
        logged_in(admin_user).get(reverse("demo-alerts")).content.decode()
    )


@pytest.mark.django_db
@pytest.mark.parametrize("fault", ["other secret", "tampered body", "no signature"])
def test_it_rejects_a_bad_signature(demo_on: None, client: Client, fault: str) -> None:
    new = rules.create_rule(
        trigger="failed", channel="webhook", target="http://127.0.0.1:8000" + demo.RECEIVE_PATH
    )
    assert new.secret
    body = failure_body("mbsess_demo2")
    key = secrets.new_secret() if fault == "other secret" else new.secret
    headers = signed(key, body, webhook_id="msg_bad")
    if fault == "tampered body":
        body = body.replace(b"JOIN_TIMEOUT", b"NOTHING_WRONG")
    if fault == "no signature":
        del headers["webhook-signature"]
    response = client.post(
        demo.RECEIVE_PATH,
        body,
        content_type="application/json",
        headers={k: v for k, v in headers.items() if k != "content-type"},
    )
    assert response.status_code == 400
    [kept] = demo.inbox.items()
    assert not kept.verified and kept.webhook_id == "msg_bad" and kept.session_id is None


@pytest.mark.django_db
def test_it_verifies_a_slack_body_with_the_same_headers(demo_on: None, client: Client) -> None:
    new = rules.create_rule(
        trigger="failed", channel="slack", target="http://127.0.0.1:8000" + demo.RECEIVE_PATH
    )
    assert new.secret
    body = json.dumps({"text": "Buddy failed", "blocks": []}).encode()
    headers = signed(new.secret, body)
    del headers["content-type"]
    response = client.post(
        demo.RECEIVE_PATH, body, content_type="application/json", headers=headers
    )
    assert response.status_code == 204
    [kept] = demo.inbox.items()
    assert kept.verified and kept.text == "Buddy failed" and kept.type == "slack message"


@pytest.mark.django_db
def test_the_page_is_newest_first_and_polls_its_partial(
    demo_on: None, client: Client, admin_user: User
) -> None:
    new = rules.create_rule(
        trigger="failed", channel="webhook", target="http://127.0.0.1:8000" + demo.RECEIVE_PATH
    )
    assert new.secret
    for number in (1, 2):
        body = failure_body(f"mbsess_order{number}")
        headers = signed(new.secret, body, webhook_id=f"msg_order{number}")
        del headers["content-type"]
        response = client.post(
            demo.RECEIVE_PATH, body, content_type="application/json", headers=headers
        )
        assert response.status_code == 204

    assert client.get(reverse("demo-alerts")).status_code == 302, "login required"
    viewer = logged_in(admin_user)
    page = viewer.get(reverse("demo-alerts")).content.decode()
    assert page.index("msg_order2") < page.index("msg_order1"), "newest first"
    assert 'hx-trigger="every 3s"' in page
    assert ">Demo alerts</a>" in page, "the nav links to it while it is on"
    assert "<script>" not in page and " style=" not in page

    partial = viewer.get(reverse("demo-alerts"), headers={"HX-Request": "true"})
    fragment = partial.content.decode()
    assert fragment.lstrip().startswith('<section id="received"')
    assert 'hx-trigger="every 3s"' in fragment and "msg_order2" in fragment
    assert "<html" not in fragment


@pytest.mark.django_db
def test_the_urls_are_not_there_when_the_setting_is_off(client: Client, admin_user: User) -> None:
    from django.conf import settings

    assert settings.MEETINGDASH_DEMO_ALERTS is False
    assert client.post(demo.RECEIVE_PATH, b"{}", content_type="application/json").status_code == (
        404
    )
    viewer = logged_in(admin_user)
    assert viewer.get(demo.PAGE_PATH).status_code == 404
    make_session("mbsess_nav1")
    listing = viewer.get(reverse("session-list")).content.decode()
    assert "Demo alerts" not in listing and demo.PAGE_PATH not in listing


@pytest.mark.django_db
def test_ensure_demo_user_makes_the_two_demo_rules_once(settings: Any) -> None:
    settings.MEETINGDASH_DEMO_ALERTS = True
    settings.MEETINGDASH_PUBLIC_URL = "http://127.0.0.1:8000"
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        call_command("ensure_demo_user", stdout=out)
        outputs.append(out.getvalue())
    demo_rules = {rule.name: rule for rule in AlertRule.objects.all()}
    assert set(demo_rules) == {demo.FAILURE_RULE, demo.STUCK_RULE}
    failed, stuck = demo_rules[demo.FAILURE_RULE], demo_rules[demo.STUCK_RULE]
    receiver = "http://127.0.0.1:8000/_demo/alerts/receive"
    assert (failed.trigger, failed.channel, failed.target) == ("failed", "webhook", receiver)
    assert (stuck.trigger, stuck.status, stuck.longer_than_seconds) == ("stuck", "joining", 60)
    assert stuck.target == receiver and failed.enabled and stuck.enabled
    assert secrets.is_valid(secrets.decrypt(failed.secret_encrypted))
    for output in outputs:
        assert "http://127.0.0.1:8000/_demo/alerts/" in output
        assert "whsec_" not in output


@pytest.mark.django_db
def test_ensure_demo_user_makes_no_rules_when_the_setting_is_off() -> None:
    out = io.StringIO()
    call_command("ensure_demo_user", stdout=out)
    assert not AlertRule.objects.exists()
    assert "_demo" not in out.getvalue()


@pytest.mark.django_db
def test_a_demo_rules_test_alert_verifies_at_the_receiver(demo_on: None, client: Client) -> None:
    """What the sender will post for "Send a test alert": the outbox's own payload, signed
    with the stored (encrypted) secret."""
    demo.ensure_demo_rules()
    rule = AlertRule.objects.get(name=demo.FAILURE_RULE)
    delivery = outbox.enqueue_test(rule)
    body = json.dumps(delivery.payload).encode()
    headers = signed(secrets.decrypt(rule.secret_encrypted), body, webhook_id=delivery.webhook_id)
    del headers["content-type"]
    response = client.post(
        demo.RECEIVE_PATH, body, content_type="application/json", headers=headers
    )
    assert response.status_code == 204
    [kept] = demo.inbox.items()
    assert kept.type == outbox.TEST and kept.rule_name == demo.FAILURE_RULE


def test_check_deploy_warns_when_the_demo_receiver_is_on_without_debug(settings: Any) -> None:
    settings.DEBUG = False
    settings.MEETINGDASH_DEMO_ALERTS = False
    assert checks.check_demo_alerts() == []
    settings.MEETINGDASH_DEMO_ALERTS = True
    [warning] = checks.check_demo_alerts()
    assert warning.id == "meetingdash.W003"
    settings.DEBUG = True
    assert checks.check_demo_alerts() == []


# --- the demo, end to end: a real `serve`, its relay's sender, a real browser -----------------


@pytest.mark.browser
@pytest.mark.slow
async def test_the_demo_shows_a_failed_sessions_alert_in_the_browser(chromium: Browser) -> None:
    """What `make demo` gives a newcomer: ensure_demo_user's rule, the relay's sender posting
    to the built-in receiver, and the page showing it without a reload (htmx polling, under
    the strict CSP)."""
    with tempfile.TemporaryDirectory(prefix="meetingdash-demo-alerts-") as tmp:
        port = free_port()
        db_path = Path(tmp) / "db.sqlite3"
        env = dash_env(
            db_path,
            MEETINGDASH_DEMO_ALERTS="1",
            MEETINGDASH_PUBLIC_URL=f"http://127.0.0.1:{port}",
            MEETINGDASH_ALERT_CHECK_SECONDS="0.5",
        )
        await asyncio.to_thread(prepare_database, env)
        async with serving(env, port) as process:
            control = SimulatorControl(process.base_url + "/_simulator")
            context = await new_context(chromium)
            try:
                page = await context.new_page()
                violations: list[str] = []
                page.on(
                    "console",
                    lambda message: (
                        violations.append(message.text)
                        if "Content Security Policy" in message.text
                        else None
                    ),
                )
                await log_in(page, process.base_url, demo.PAGE_PATH)
                assert await page.locator('nav a[aria-current="page"]').inner_text() == (
                    "Demo alerts"
                )
                dash = Dash(process.base_url, db_path, control, process)
                session_id = await new_session(dash, page, bot_name="Demo failing bot")
                control.emit(
                    session_id,
                    status="failed",
                    error_code="JOIN_TIMEOUT",
                    error_message="the bot could not join",
                )
                row = page.locator(".demo-alert", has_text=session_id)
                await row.first.wait_for(timeout=30_000)
                text = await row.first.inner_text()
                assert "session.failed" in text and "✓ verified" in text
                assert "Demo failing bot" in text and demo.FAILURE_RULE in text
                link = row.first.locator(f'a[href="/sessions/{session_id}/"]')
                assert await link.count() == 1
                assert violations == []
            finally:
                await context.close()
                control.close()
