"""The dashboard's read-only alerts page: rules in words, what was sent, what failed."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from sessions_monitor.alerts import outbox
from sessions_monitor.alerts.rules import create_rule
from sessions_monitor.models import DeliveryStatus, MeetingSession

pytestmark = pytest.mark.django_db

SLACK_URL = "https://hooks.slack.test/services/T000/B000/s3cr3tpathtoken"


def signed_in(staff: bool = False) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", is_staff=staff))
    return client


def test_it_needs_a_login() -> None:
    response = Client().get("/alerts/")
    assert response.status_code == 302
    assert "/login" in response["Location"]


def test_rules_are_shown_in_words_without_their_secrets() -> None:
    new = create_rule(
        trigger="stuck",
        status="joining",
        longer_than_seconds=180,
        channel="slack",
        target=SLACK_URL,
    )
    create_rule(
        trigger="failed",
        error_code="JOIN_TIMEOUT",
        platform="zoom",
        channel="email",
        target="ops@example.test",
        enabled=False,
    )
    page = signed_in().get("/alerts/").content.decode()
    assert "in &#x27;joining&#x27;, longer than 3 min 00 s" in page
    assert "error JOIN_TIMEOUT, on zoom" in page
    assert "https://hooks.slack.test/…" in page
    assert "s3cr3tpathtoken" not in page
    assert new.secret is not None and new.secret not in page
    assert "Off" in page
    assert "/admin/" not in page  # the admin link is for staff


def test_recent_alerts_link_their_session_and_say_what_failed() -> None:
    rule = create_rule(trigger="failed", channel="webhook", target="https://example.test/h").rule
    session = MeetingSession.objects.create(
        session_id="mbsess_page1", bot_name="Notetaker", status="failed", error_code="JOIN_TIMEOUT"
    )
    outbox.enqueue_session_alert(outbox.FAILED, session, notify=False)
    given_up = outbox.enqueue_test(rule)
    given_up.is_test = False
    given_up.status = DeliveryStatus.GAVE_UP
    given_up.attempts = 12
    given_up.response_code = 500
    given_up.last_attempt_at = given_up.created_at
    given_up.save()

    client = signed_in(staff=True)
    page = client.get("/alerts/").content.decode()
    assert "Notetaker (mbsess_page1) failed [JOIN_TIMEOUT]" in page
    assert 'href="/sessions/mbsess_page1/"' in page
    assert "1 alert could not be delivered in the last day" in page
    assert "12 attempts, last answer 500" in page
    assert 'href="/admin/sessions_monitor/alertdelivery/?status__exact=gave_up"' in page
