"""Alert rules: making them (the admin and `add_alert_rule` share `create_rule`) and
matching them against a session."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator

from sessions_monitor.alerts import secrets
from sessions_monitor.models import AlertChannel, AlertRule, AlertTrigger, MeetingSession
from sessions_monitor.presentation import format_duration
from sessions_monitor.upstream.events import TERMINAL_STATUSES

SIGNED_CHANNELS = frozenset({AlertChannel.WEBHOOK, AlertChannel.SLACK})


@dataclass(frozen=True, slots=True)
class NewRule:
    rule: AlertRule
    secret: str | None  # the signing secret, when this call made one: show it once


def validate_rule(rule: AlertRule) -> None:
    """Raise ValidationError (field -> message) when the rule cannot work as given."""
    errors: dict[str, str] = {}
    if rule.trigger == AlertTrigger.STUCK:
        if not rule.status:
            errors["status"] = "A stuck rule needs the status a session is stuck in."
        elif rule.status in TERMINAL_STATUSES:
            errors["status"] = f"A session does not get stuck in {rule.status!r}: it has ended."
        if not rule.longer_than_seconds:
            errors["longer_than_seconds"] = "A stuck rule needs how long is too long."
    elif rule.trigger == AlertTrigger.UPSTREAM_DOWN and not rule.longer_than_seconds:
        errors["longer_than_seconds"] = "Say after how many seconds of being down to alert."
    if rule.error_code and rule.trigger != AlertTrigger.FAILED:
        errors["error_code"] = "Only a failed session has an error code: leave it empty."
    if rule.channel == AlertChannel.EMAIL:
        try:
            EmailValidator()(rule.target)
        except ValidationError:
            errors["target"] = "Enter the email address to send alerts to."
    else:
        try:
            URLValidator(schemes=["http", "https"])(rule.target)
        except ValidationError:
            errors["target"] = "Enter the webhook's http:// or https:// URL."
    if errors:
        raise ValidationError(errors)


def set_secret(rule: AlertRule, secret: str | None = None) -> str:
    """Give a signed rule its secret (a new one unless given); returns it, to show once."""
    secret = secret or secrets.new_secret()
    if not secrets.is_valid(secret):
        raise ValidationError({"secret": "A secret looks like whsec_ and a base64 key."})
    rule.secret_encrypted = secrets.encrypt(secret)
    rule.secret_hint = secrets.hint(secret)
    return secret


def create_rule(*, secret: str | None = None, **fields: Any) -> NewRule:
    rule = AlertRule(**fields)
    validate_rule(rule)
    made: str | None = None
    if rule.channel in SIGNED_CHANNELS:
        made = set_secret(rule, secret)
        made = None if secret else made
    rule.save()
    return NewRule(rule, made)


def matches(rule: AlertRule, session: MeetingSession) -> bool:
    """The rule's filters (error code, platform, bot name pattern) against the session."""
    if rule.error_code and rule.error_code != session.error_code:
        return False
    if rule.platform and rule.platform.casefold() != session.platform.casefold():
        return False
    pattern = rule.bot_name_pattern.casefold()
    return not pattern or fnmatchcase(session.bot_name.casefold(), pattern)


def safe_target(rule: AlertRule) -> str:
    """What a list may show of a rule's target: an email address, or a URL's scheme and host
    (a Slack webhook URL carries its secret in the path)."""
    if rule.channel == AlertChannel.EMAIL:
        return rule.target
    parts = urlsplit(rule.target)
    if not parts.scheme or not parts.hostname:
        return "(not a URL)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"


def filters_in_words(rule: AlertRule) -> str:
    words: list[str] = []
    if rule.trigger == AlertTrigger.STUCK and rule.status:
        words.append(f"in {rule.status!r}")
    if rule.longer_than_seconds:
        words.append(f"longer than {format_duration(rule.longer_than_seconds)}")
    if rule.error_code:
        words.append(f"error {rule.error_code}")
    if rule.platform:
        words.append(f"on {rule.platform}")
    if rule.bot_name_pattern:
        words.append(f"bot {rule.bot_name_pattern!r}")
    return ", ".join(words) or "every session"


def enabled_rules(trigger: str) -> list[AlertRule]:
    return list(AlertRule.objects.filter(enabled=True, trigger=trigger))
