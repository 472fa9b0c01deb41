"""The admin of alerts: rules with a secret shown once, the read-only delivery log, retry."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sessions_monitor.alerts import outbox, rules, secrets
from sessions_monitor.models import AlertDelivery, AlertRule, DeliveryStatus, Follow
from tests.support import make_session

pytestmark = pytest.mark.django_db

RULES = "admin:sessions_monitor_alertrule_changelist"
RULE_ADD = "admin:sessions_monitor_alertrule_add"
DELIVERIES = "admin:sessions_monitor_alertdelivery_changelist"
SLACK_URL = "https://hooks.slack.com/services/T0AAA/B0BBB/SlackPathToken123"
SECRET_ON_PAGE = re.compile(r"<code>(whsec_[A-Za-z0-9+/=]+)</code>")


def rule_form(**overrides: str) -> dict[str, str]:
    values = {
        "name": "Ops failures",
        "enabled": "on",
        "trigger": "failed",
        "status": "",
        "longer_than_seconds": "",
        "error_code": "",
        "platform": "",
        "bot_name_pattern": "",
        "channel": "webhook",
        "target": "https://hooks.example.com/alerts/PathToken987",
        "secret": "",
        "_save": "Save",
    }
    return {**values, **overrides}


def change_url(rule: AlertRule) -> str:
    return reverse("admin:sessions_monitor_alertrule_change", args=[rule.pk])


def delivery_url(delivery: AlertDelivery, view: str = "change") -> str:
    return reverse(f"admin:sessions_monitor_alertdelivery_{view}", args=[delivery.pk])


def make_rule(**fields: Any) -> AlertRule:
    values: dict[str, Any] = {"trigger": "failed", "channel": "webhook", "target": SLACK_URL}
    return rules.create_rule(**{**values, **fields}).rule


def staff_with(django_user_model: type[User], *codenames: str) -> Client:
    user = django_user_model.objects.create_user("alerts-staff", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def run_action(client: Client, url: str, action: str, rows: list[Any]) -> Any:
    data = {"action": action, "_selected_action": [str(row.pk) for row in rows]}
    return client.post(url, data, follow=True)


# --- rules ---------------------------------------------------------------------------------


def test_it_shows_a_new_rules_secret_once_and_never_again(admin_client: Client) -> None:
    response = admin_client.post(reverse(RULE_ADD), rule_form(), follow=True)
    assert response.status_code == 200
    body = response.content.decode()
    found = SECRET_ON_PAGE.findall(body)
    assert len(found) == 1, "the secret is shown on the page after saving"
    secret = html.unescape(found[0])
    assert response.redirect_chain == [], "shown at once, not carried to the next page"
    assert "no-store" in response["Cache-Control"]
    assert secret not in str(admin_client.cookies), "never in a cookie (the messages' storage)"
    rule = AlertRule.objects.get(name="Ops failures")
    assert rule.created_by is not None and rule.created_by.username == "admin"
    assert secrets.decrypt(rule.secret_encrypted) == secret
    assert secret not in rule.secret_encrypted
    assert rule.secret_hint == secrets.hint(secret)

    page = admin_client.get(change_url(rule)).content.decode()
    assert secret not in page and html.escape(secret) not in page
    assert secrets.hint(secret) in page, "the hint says which secret it is"
    assert secret not in admin_client.get(reverse(RULES)).content.decode()


def test_it_signs_with_a_pasted_secret_and_does_not_echo_it(admin_client: Client) -> None:
    pasted = secrets.new_secret()
    response = admin_client.post(reverse(RULE_ADD), rule_form(secret=pasted), follow=True)
    assert response.status_code == 200
    assert pasted not in response.content.decode()
    rule = AlertRule.objects.get(name="Ops failures")
    assert secrets.decrypt(rule.secret_encrypted) == pasted


def test_it_keeps_a_rules_secret_when_its_form_is_saved_again(admin_client: Client) -> None:
    rule = make_rule(name="Keep me")
    before = secrets.decrypt(rule.secret_encrypted)
    form = rule_form(name="Kept", target=SLACK_URL)
    response = admin_client.post(change_url(rule), form, follow=True)
    assert response.status_code == 200
    assert not SECRET_ON_PAGE.search(response.content.decode())
    rule.refresh_from_db()
    assert rule.name == "Kept"
    assert secrets.decrypt(rule.secret_encrypted) == before


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"trigger": "stuck"}, "status", "A stuck rule needs the status"),
        ({"trigger": "stuck", "status": "joining"}, "longer_than_seconds", "how long is too long"),
        ({"trigger": "stuck", "status": "failed", "longer_than_seconds": "60"}, "status", "ended"),
        ({"target": "not a url"}, "target", "http:// or https:// URL"),
        ({"channel": "email", "target": "https://x.example"}, "target", "email address"),
        ({"secret": "whsec_short"}, "secret", "whsec_ and a base64 key"),
    ],
)
def test_it_shows_validation_errors_on_their_fields(
    admin_client: Client, form: dict[str, str], field: str, message: str
) -> None:
    response = admin_client.post(reverse(RULE_ADD), rule_form(**form))
    assert response.status_code == 200, "the form comes back"
    errors = response.context["adminform"].form.errors
    assert field in errors and message in " ".join(errors[field])
    assert message in html.unescape(response.content.decode())
    assert not AlertRule.objects.exists()


def test_the_list_shows_filters_in_words_and_only_the_host_of_a_url(
    admin_client: Client,
) -> None:
    rule = make_rule(name="Stuck Acme", trigger="stuck", status="joining", longer_than_seconds=90)
    rule.bot_name_pattern = "Acme*"
    rule.save()
    outbox.enqueue_test(rule)
    make_rule(name="Mail", channel="email", target="ops@example.com")
    body = admin_client.get(reverse(RULES)).content.decode()
    assert "SlackPathToken123" not in body and "/services/" not in body
    assert "https://hooks.slack.com/…" in body
    assert "in &#x27;joining&#x27;, longer than 1 min 30 s, bot &#x27;Acme*&#x27;" in body
    assert rule.secret_hint in body
    assert "ops@example.com" in body
    assert "Pending" in body, "the last delivery's status"
    count_link = re.search(r'<a href="([^"]+rule__id__exact[^"]+)">1</a>', body)
    assert count_link, "deliveries of the last day, linked to the log"
    listed = admin_client.get(html.unescape(count_link.group(1))).context["cl"].result_list
    assert [row.rule_id for row in listed] == [rule.pk]
    deliveries = admin_client.get(reverse(DELIVERIES)).content.decode()
    assert "SlackPathToken123" not in deliveries


def test_send_a_test_alert_links_to_its_delivery(admin_client: Client) -> None:
    rule = make_rule(name="Tested")
    response = run_action(admin_client, reverse(RULES), "send_test", [rule])
    body = response.content.decode()
    link = re.search(r'queued: <a href="([^"]+)">its delivery</a>', body)
    assert link, body
    delivery = AlertDelivery.objects.get(rule=rule)
    assert delivery.is_test and delivery.kind == outbox.TEST
    assert delivery.status == DeliveryStatus.PENDING
    page = admin_client.get(html.unescape(link.group(1)))
    assert page.status_code == 200
    text = page.content.decode()
    assert delivery.webhook_id in text and "alert.test" in text and "<pre>" in text


def test_make_a_new_signing_secret_shows_it_once(admin_client: Client) -> None:
    rule = make_rule(name="Rotated")
    before = secrets.decrypt(rule.secret_encrypted)
    mail = make_rule(name="Mail", channel="email", target="ops@example.com")
    response = run_action(admin_client, reverse(RULES), "new_secret", [rule, mail])
    body = response.content.decode()
    [shown] = SECRET_ON_PAGE.findall(body)
    assert "no-store" in response["Cache-Control"]
    rule.refresh_from_db()
    assert secrets.decrypt(rule.secret_encrypted) == html.unescape(shown) != before
    assert "sends email: it has no signing secret" in html.unescape(body)


def test_enable_and_disable_rules(admin_client: Client) -> None:
    one, two = make_rule(name="One"), make_rule(name="Two")
    run_action(admin_client, reverse(RULES), "disable_rules", [one, two])
    assert not AlertRule.objects.filter(enabled=True).exists()
    run_action(admin_client, reverse(RULES), "enable_rules", [one])
    assert list(AlertRule.objects.filter(enabled=True)) == [one]


# --- the delivery log ----------------------------------------------------------------------


def test_the_delivery_log_is_read_only(admin_client: Client) -> None:
    delivery = outbox.enqueue_test(make_rule())
    assert admin_client.get(reverse("admin:sessions_monitor_alertdelivery_add")).status_code == 403
    listing = admin_client.get(reverse(DELIVERIES)).content.decode()
    assert reverse("admin:sessions_monitor_alertdelivery_add") not in listing
    assert 'value="delete_selected"' not in listing
    assert admin_client.get(delivery_url(delivery, "delete")).status_code == 403
    page = admin_client.get(delivery_url(delivery))
    assert page.status_code == 200 and 'name="status"' not in page.content.decode()
    response = admin_client.post(delivery_url(delivery), {"status": "delivered"})
    assert response.status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def test_retry_now_requeues_gave_up_rows_and_keeps_attempts(
    admin_client: Client, django_user_model: type[User]
) -> None:
    rule = make_rule()
    gave_up, delivered = outbox.enqueue_test(rule), outbox.enqueue_test(rule)
    long_ago = timezone.now() - dt.timedelta(days=1)
    AlertDelivery.objects.filter(pk=gave_up.pk).update(
        status=DeliveryStatus.GAVE_UP, attempts=12, next_attempt_at=long_ago
    )
    AlertDelivery.objects.filter(pk=delivered.pk).update(
        status=DeliveryStatus.DELIVERED, attempts=1, delivered_at=long_ago
    )

    viewer = staff_with(django_user_model, "view_alertdelivery")
    run_action(viewer, reverse(DELIVERIES), "retry_now", [gave_up])
    gave_up.refresh_from_db()
    assert gave_up.status == DeliveryStatus.GAVE_UP, "retrying needs the change permission"

    before = timezone.now()
    response = run_action(admin_client, reverse(DELIVERIES), "retry_now", [gave_up, delivered])
    assert "1 delivery will be sent again" in response.content.decode()
    gave_up.refresh_from_db()
    delivered.refresh_from_db()
    assert gave_up.status == DeliveryStatus.PENDING and gave_up.attempts == 12
    assert gave_up.next_attempt_at >= before
    assert delivered.status == DeliveryStatus.DELIVERED and delivered.delivered_at == long_ago


def test_a_user_who_may_retry_still_cannot_edit_a_delivery(
    django_user_model: type[User],
) -> None:
    delivery = outbox.enqueue_test(make_rule())
    client = staff_with(django_user_model, "view_alertdelivery", "change_alertdelivery")
    assert client.get(delivery_url(delivery)).status_code == 200
    assert client.post(delivery_url(delivery), {"attempts": "0"}).status_code == 403
    AlertDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.GAVE_UP)
    run_action(client, reverse(DELIVERIES), "retry_now", [delivery])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def test_the_delivery_log_filters_and_searches(admin_client: Client) -> None:
    rule = make_rule()
    session = make_session("mbsess_alert1", status="failed", error_code="JOIN_TIMEOUT")
    outbox.enqueue_session_alert(outbox.FAILED, session, rules=[rule], notify=False)
    failed = AlertDelivery.objects.get(kind=outbox.FAILED)
    test = outbox.enqueue_test(rule)

    def shown(query: dict[str, str]) -> set[int]:
        response = admin_client.get(reverse(DELIVERIES), query)
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    assert shown({"is_test__exact": "1"}) == {test.pk}
    assert shown({"kind": outbox.FAILED}) == {failed.pk}
    assert shown({"status__exact": "pending"}) == {test.pk, failed.pk}
    assert shown({"q": "mbsess_alert1"}) == {failed.pk}
    assert shown({"q": test.webhook_id}) == {test.pk}
    body = admin_client.get(reverse(DELIVERIES)).content.decode()
    assert reverse("session-detail", args=["mbsess_alert1"]) in body
    admin_page = reverse("admin:sessions_monitor_meetingsession_change", args=[quote(session.pk)])
    assert admin_page in body


def test_the_session_page_links_to_its_alert_deliveries(admin_client: Client) -> None:
    rule = make_rule()
    session = make_session("mbsess_alert2", status="failed")
    other = make_session("mbsess_alert3", status="failed")
    for each in (session, other):
        outbox.enqueue_session_alert(outbox.FAILED, each, rules=[rule], notify=False)
    page = admin_client.get(
        reverse("admin:sessions_monitor_meetingsession_change", args=[quote(session.pk)])
    ).content.decode()
    # The object tools' link (the sidebar's "Alert deliveries" is the whole log).
    link = re.search(r'<li><a href="([^"]+\?[^"]+)">Alert deliveries</a></li>', page)
    assert link, "the session page links to its deliveries"
    response = admin_client.get(html.unescape(link.group(1)))
    assert [row.session_id for row in response.context["cl"].result_list] == ["mbsess_alert2"]


def test_follows_are_listed_read_only(admin_client: Client, django_user_model: type[User]) -> None:
    user = django_user_model.objects.create_user("follower")
    follow = Follow.objects.create(user=user, bot_name="Acme Notetaker")
    body = admin_client.get(reverse("admin:sessions_monitor_follow_changelist")).content.decode()
    assert "every session of the bot &#x27;Acme Notetaker&#x27;" in body
    assert admin_client.get(reverse("admin:sessions_monitor_follow_add")).status_code == 403
    change = reverse("admin:sessions_monitor_follow_change", args=[follow.pk])
    assert admin_client.post(change, {"bot_name": "x"}).status_code == 403
