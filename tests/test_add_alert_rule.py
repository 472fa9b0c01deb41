"""`manage.py add_alert_rule`: the same rules as the admin's, from the command line."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from sessions_monitor.alerts import secrets
from sessions_monitor.models import AlertRule

pytestmark = pytest.mark.django_db

HOOK = "https://hooks.example.com/alerts/TokenInPath42"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("add_alert_rule", *args, stdout=out)
    return out.getvalue()


def printed_rule(output: str) -> AlertRule:
    found = re.search(r"Alert rule (\d+) added", output)
    assert found, output
    return AlertRule.objects.get(pk=int(found.group(1)))


def test_it_prints_the_rule_id_and_the_secret_it_made() -> None:
    output = run("--on", "failed", "--error-code", "JOIN_TIMEOUT", "--webhook", HOOK)
    rule = printed_rule(output)
    secret = output.strip().split()[-1]
    assert secret.startswith("whsec_") and secrets.is_valid(secret)
    assert (rule.trigger, rule.channel, rule.target) == ("failed", "webhook", HOOK)
    assert rule.error_code == "JOIN_TIMEOUT" and rule.enabled
    assert secrets.decrypt(rule.secret_encrypted) == secret
    assert rule.secret_hint == secrets.hint(secret)


def test_the_secret_is_stored_encrypted_not_in_plain_text() -> None:
    output = run("--on", "lost", "--webhook", HOOK)
    secret = output.strip().split()[-1]
    rule = printed_rule(output)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM sessions_monitor_alertrule WHERE id = %s", [rule.pk])
        row = cursor.fetchone()
    assert row is not None
    stored = " ".join(str(value) for value in row)
    assert secret not in stored
    assert secret[len("whsec_") :] not in stored
    assert rule.secret_encrypted and rule.secret_encrypted in stored


def test_a_given_secret_is_used_and_not_printed() -> None:
    given = secrets.new_secret()
    output = run("--on", "failed", "--webhook", HOOK, "--secret", given)
    assert given not in output and "whsec_" not in output
    assert secrets.decrypt(printed_rule(output).secret_encrypted) == given


def test_format_slack_makes_a_slack_rule() -> None:
    output = run(
        "--on", "stuck", "--status", "joining", "--longer-than", "60",
        "--webhook", HOOK, "--format", "slack", "--platform", "zoom",
        "--bot", "Acme*", "--name", "Acme stuck",
    )  # fmt: skip
    rule = printed_rule(output)
    assert rule.channel == "slack" and rule.name == "Acme stuck"
    assert (rule.status, rule.longer_than_seconds) == ("joining", 60)
    assert (rule.platform, rule.bot_name_pattern) == ("zoom", "Acme*")
    assert "whsec_" in output, "slack rules are signed too"


def test_email_rules_have_no_secret() -> None:
    output = run("--on", "failed", "--email", "ops@example.com")
    rule = printed_rule(output)
    assert (rule.channel, rule.target) == ("email", "ops@example.com")
    assert rule.secret_encrypted == "" and "whsec_" not in output


def test_upstream_down_needs_how_long() -> None:
    rule = printed_rule(run("--on", "upstream_down", "--longer-than", "120", "--webhook", HOOK))
    assert (rule.trigger, rule.longer_than_seconds) == ("upstream_down", 120)
    with pytest.raises(CommandError, match="--longer-than"):
        run("--on", "upstream_down", "--webhook", HOOK)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--on", "stuck", "--status", "joining", "--webhook", HOOK], r"--longer-than: .*how long"),
        (["--on", "stuck", "--longer-than", "60", "--webhook", HOOK], r"--status: .*status"),
        (["--on", "stuck", "--status", "failed", "--longer-than", "9", "--webhook", HOOK], "ended"),
        (["--on", "failed", "--webhook", "ftp://nope"], r"--webhook: .*http"),
        (["--on", "failed", "--email", "not-an-address"], r"--email: .*email address"),
        (["--on", "failed", "--webhook", HOOK, "--secret", "whsec_x"], r"--secret: "),
        (["--on", "failed", "--email", "a@example.com", "--format", "slack"], "--webhook only"),
        (["--on", "failed", "--status", "joining", "--webhook", HOOK], "--status is for"),
        (["--on", "lost", "--longer-than", "5", "--webhook", HOOK], "--longer-than is for"),
        (
            ["--on", "stuck", "--status", "joining", "--longer-than", "0", "--webhook", HOOK],
            "positive",
        ),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_option(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not AlertRule.objects.exists()


def test_it_needs_exactly_one_destination() -> None:
    with pytest.raises(CommandError, match="--webhook --email"):
        run("--on", "failed")
    with pytest.raises(CommandError, match="not allowed with"):
        run("--on", "failed", "--webhook", HOOK, "--email", "a@example.com")
