"""Sending one alert delivery through its rule's channel: Standard Webhooks, Slack, email.

Nothing here touches the database: the sender loads the row and its rule, calls `send`,
and records the `Attempt`. An attempt's `error` is plain words for the admin and the logs:
it never holds the target URL's path or query (webhook URLs often embed a token, Slack's
always do), the signing secret or the SMTP password.
"""

from __future__ import annotations

import json
import math
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from standardwebhooks.webhooks import Webhook

from sessions_monitor.alerts import secrets
from sessions_monitor.models import AlertChannel, AlertDelivery, AlertRule

USER_AGENT = "MeetingDash-Alerts"
TIMEOUT_SECONDS = 10.0
SUBJECT_CHARS = 150
SLACK_HEADER_CHARS = 150
SLACK_FIELD_CHARS = 1900  # Slack refuses a section field over 2000 characters


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    response_code: int | None = None
    error: str = ""


def new_client() -> httpx.AsyncClient:
    """One client per sending round: 10 s for everything, redirects not followed (a
    redirect would resend the signed body to a place the admin did not choose)."""
    return httpx.AsyncClient(
        timeout=TIMEOUT_SECONDS, follow_redirects=False, headers={"user-agent": USER_AGENT}
    )


async def send(
    delivery: AlertDelivery, rule: AlertRule, *, client: httpx.AsyncClient | None = None
) -> Attempt:
    """One attempt; never raises for what the receiver or the network does."""
    if rule.channel == AlertChannel.EMAIL:
        return await send_email(delivery, rule)
    slack = rule.channel == AlertChannel.SLACK
    body = json.dumps(slack_body(delivery.payload) if slack else delivery.payload).encode()
    if client is not None:
        return await post_signed(client, delivery, rule, body)
    async with new_client() as own:
        return await post_signed(own, delivery, rule, body)


# --- webhooks (JSON and Slack) --------------------------------------------------------------


def signed_headers(secret: str, webhook_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers (interfaces.md, "Alert deliveries") for this attempt."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


async def post_signed(
    client: httpx.AsyncClient, delivery: AlertDelivery, rule: AlertRule, body: bytes
) -> Attempt:
    if not rule.secret_encrypted:
        return Attempt(False, None, "the rule has no signing secret: set one on the rule")
    try:
        secret = secrets.decrypt(rule.secret_encrypted)
    except secrets.SecretUnreadable as exc:
        return Attempt(False, None, str(exc))
    headers = signed_headers(secret, delivery.webhook_id, body, datetime.now(UTC))
    host = urlsplit(rule.target).hostname or "the receiver"
    try:
        response = await client.post(
            rule.target,
            content=body,
            headers=headers,
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        return Attempt(False, None, f"{host} did not answer within {TIMEOUT_SECONDS:g} s")
    except httpx.ConnectError:
        return Attempt(False, None, f"could not connect to {host}")
    except httpx.RemoteProtocolError:
        return Attempt(False, None, f"{host} closed the connection without a valid answer")
    except Exception as exc:  # a bad URL, TLS, anything: its message may hold the URL
        return Attempt(False, None, f"could not send to {host} ({type(exc).__name__})")
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(True, code)
    if 300 <= code < 400:
        return Attempt(False, code, f"{host} answered HTTP {code} (redirects are not followed)")
    return Attempt(False, code, f"{host} answered HTTP {code} {response.reason_phrase}".rstrip())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str, limit: int = SLACK_FIELD_CHARS) -> str:
    """Slack's mrkdwn escaping, cut to what a Slack text object accepts."""
    return _cut(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message made from the webhook payload."""
    data: dict[str, Any] = payload.get("data") or {}
    text = str(data.get("text") or payload.get("type") or "MeetingDash alert")
    facts = [
        ("Status", data.get("status")),
        ("Error code", data.get("error_code")),
        ("Error", data.get("error_message")),
        ("Session", data.get("session_id")),
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{label}*\n{_mrkdwn(str(value))}"}
        for label, value in facts
        if value
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(text, SLACK_HEADER_CHARS)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(text)}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if url := data.get("url"):
        link = f"<{url}|Open in MeetingDash>"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link}})
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": str(payload.get("type"))}]}
    )
    return {"text": text, "blocks": blocks}


# --- email ----------------------------------------------------------------------------------


def email_subject(payload: dict[str, Any]) -> str:
    data: dict[str, Any] = payload.get("data") or {}
    text = str(data.get("text") or payload.get("type") or "MeetingDash alert")
    return _cut(" ".join(text.split()), SUBJECT_CHARS)


def email_body(payload: dict[str, Any]) -> str:
    data: dict[str, Any] = payload.get("data") or {}
    lines = [str(data.get("text") or payload.get("type")), ""]
    facts = [
        ("Alert", payload.get("type")),
        ("Session", data.get("session_id")),
        ("Bot", data.get("bot_name")),
        ("Status", data.get("status")),
        ("Error code", data.get("error_code")),
        ("Error", data.get("error_message")),
        ("At", payload.get("timestamp")),
    ]
    lines += [f"{label}: {value}" for label, value in facts if value]
    if url := data.get("url"):
        lines += ["", f"Open in MeetingDash: {url}"]
    lines += ["", "-- ", "Sent by MeetingDash because an alert rule matched."]
    return "\n".join(lines) + "\n"


def _smtp_words(said: bytes | str) -> str:
    return said.decode(errors="replace") if isinstance(said, bytes) else str(said)


def _send_email_now(delivery: AlertDelivery, rule: AlertRule) -> Attempt:
    message = EmailMessage(
        subject=email_subject(delivery.payload),
        body=email_body(delivery.payload),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[rule.target],
        headers={"X-MeetingDash-Alert-Id": delivery.webhook_id},
        connection=get_connection(fail_silently=False),
    )
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        code, said = next(iter(exc.recipients.values()), (None, b""))
        words = _smtp_words(said)
        return Attempt(False, code, f"the mail server refused the recipient: {code} {words}")
    except smtplib.SMTPResponseException as exc:
        words = _smtp_words(exc.smtp_error)
        return Attempt(False, exc.smtp_code, f"the mail server answered {exc.smtp_code} {words}")
    except smtplib.SMTPException as exc:
        return Attempt(False, None, f"the mail server failed ({type(exc).__name__})")
    except TimeoutError:
        return Attempt(False, None, "the mail server did not answer in time")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return Attempt(False, None, f"could not connect to the mail server ({reason})")
    return Attempt(True, None)


async def send_email(delivery: AlertDelivery, rule: AlertRule) -> Attempt:
    """smtplib blocks: the message goes out from a worker thread, off the event loop."""
    return await sync_to_async(_send_email_now, thread_sensitive=False)(delivery, rule)
