"""The demo's built-in alert receiver (`MEETINGDASH_DEMO_ALERTS=1`, set by `make demo` only).

It is what a customer's webhook endpoint would be: it verifies each POST's Standard Webhooks
signature with the secret of the rule that targets it, and keeps the last alerts in this
process's memory (the demo runs in one process) for a page that polls them.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from sessions_monitor.alerts import rules, secrets
from sessions_monitor.models import AlertChannel, AlertRule, AlertTrigger
from sessions_monitor.upstream import is_valid_session_id

RECEIVE_PATH = "/_demo/alerts/receive"
PAGE_PATH = "/_demo/alerts/"
KEEP = 200

FAILURE_RULE = "Demo: any failure"
STUCK_RULE = "Demo: stuck joining > 60 s"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@dataclass(frozen=True, slots=True)
class ReceivedAlert:
    received_at: datetime
    webhook_id: str
    verified: bool
    type: str
    text: str
    session_id: str | None
    rule_name: str
    repeat: bool  # the same webhook-id arrived before: a retry of one alert

    @property
    def session_url(self) -> str | None:
        if self.session_id and is_valid_session_id(self.session_id):
            return reverse("session-detail", args=[self.session_id])
        return None


class Inbox:
    """The last `KEEP` POSTs, newest first; shared by the request threads of one process."""

    def __init__(self, keep: int = KEEP) -> None:
        self._items: deque[ReceivedAlert] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, alert: ReceivedAlert) -> None:
        with self._lock:
            self._items.appendleft(alert)

    def seen(self, webhook_id: str) -> bool:
        with self._lock:
            return any(item.webhook_id == webhook_id and item.verified for item in self._items)

    def items(self) -> list[ReceivedAlert]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


inbox = Inbox()


def _require_on() -> None:
    if not settings.MEETINGDASH_DEMO_ALERTS:
        raise Http404("The demo alert receiver is off.")


def _receiving_rules() -> list[AlertRule]:
    """The signed rules whose target is this receiver (whatever host and port they name)."""
    candidates = AlertRule.objects.filter(
        channel__in=rules.SIGNED_CHANNELS, target__endswith=RECEIVE_PATH
    ).exclude(secret_encrypted="")
    return [rule for rule in candidates if urlsplit(rule.target).path == RECEIVE_PATH]


def verify(body: bytes, headers: dict[str, str]) -> tuple[AlertRule, Any] | None:
    """The rule whose secret signed this body, and the parsed body; None if none did."""
    for rule in _receiving_rules():
        try:
            secret = secrets.decrypt(rule.secret_encrypted)
        except secrets.SecretUnreadable:
            continue
        try:
            return rule, Webhook(secret).verify(body, headers)
        except (WebhookVerificationError, ValueError):
            continue
    return None


def _received(webhook_id: str, rule: AlertRule, body: Any) -> ReceivedAlert:
    body = body if isinstance(body, dict) else {}
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    session_id = data.get("session_id")
    text = data.get("text") or body.get("text") or ""
    return ReceivedAlert(
        received_at=timezone.now(),
        webhook_id=webhook_id,
        verified=True,
        type=str(body.get("type") or ("slack message" if "blocks" in body else "?")),
        text=str(text),
        session_id=session_id if isinstance(session_id, str) else None,
        rule_name=str(rule),
        repeat=inbox.seen(webhook_id),
    )


@csrf_exempt
@require_POST
def receive(request: HttpRequest) -> HttpResponse:
    """204 for a correctly signed alert, 400 otherwise (kept too, marked unverified)."""
    _require_on()
    headers = {
        name: request.headers.get(name, "")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    webhook_id = headers["webhook-id"][:64]
    verified = verify(request.body, headers)
    if verified is None:
        inbox.add(
            ReceivedAlert(
                received_at=timezone.now(),
                webhook_id=webhook_id,
                verified=False,
                type="?",
                text="Rejected: the signature did not verify with any demo rule's secret.",
                session_id=None,
                rule_name="",
                repeat=False,
            )
        )
        return HttpResponse("bad signature", status=400, content_type="text/plain")
    rule, body = verified
    inbox.add(_received(webhook_id, rule, body))
    return HttpResponse(status=204)


@never_cache
@login_required
@require_GET
@vary_on_headers("HX-Request")
def page(request: HtmxHttpRequest) -> HttpResponse:
    _require_on()
    template = "alerts/demo_receiver.html"
    if request.htmx:
        template += "#received"
    context = {
        "received": inbox.items(),
        "keep": KEEP,
        "rule_names": [FAILURE_RULE, STUCK_RULE],
        "receive_url": settings.MEETINGDASH_PUBLIC_URL + RECEIVE_PATH,
    }
    return render(request, template, context)


# --- the demo's rules (`ensure_demo_user`) ---------------------------------------------------


def ensure_demo_rules() -> list[str]:
    """The two demo rules, made once (by name) and left alone afterwards: returns the names
    of those made now."""
    target = settings.MEETINGDASH_PUBLIC_URL + RECEIVE_PATH
    wanted: dict[str, dict[str, Any]] = {
        FAILURE_RULE: {"trigger": AlertTrigger.FAILED},
        STUCK_RULE: {"trigger": AlertTrigger.STUCK, "status": "joining", "longer_than_seconds": 60},
    }
    made = []
    for name, fields in wanted.items():
        if AlertRule.objects.filter(name=name).exists():
            continue
        rules.create_rule(name=name, channel=AlertChannel.WEBHOOK, target=target, **fields)
        made.append(name)
    return made
