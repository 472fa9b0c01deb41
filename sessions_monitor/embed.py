"""Signed, expiring, read-only tokens for the embeddable status widget.

A token names exactly one session and an expiry, signed with SECRET_KEY under its own salt
(so no other signed value of the project can pass for one). Nothing is stored: rotating
SECRET_KEY revokes every widget link at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import urlencode

logger = logging.getLogger(__name__)

SALT = "meetingdash.embed.v1"
MAX_DAYS = 3650
WIDGET_WIDTH = 300
WIDGET_HEIGHT = 80
# scheme://host[:port], host may be a wildcard subdomain as CSP allows (https://*.example.com).
_ORIGIN_RE = re.compile(r"https?://((\*\.)?[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(:[0-9]{1,5})?")


class InvalidEmbedToken(Exception):
    """Tampered, expired, malformed, or made for another session."""


@dataclass(frozen=True)
class EmbedGrant:
    session_id: str
    expires_at: dt.datetime


def default_days() -> int:
    return int(settings.MEETINGDASH_EMBED_TOKEN_DAYS)


def make_token(session_id: str, *, days: int | None = None, now: float | None = None) -> str:
    days = default_days() if days is None else days
    if not 0 < days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    issued = time.time() if now is None else now
    payload = {"sid": session_id, "exp": int(issued + days * 86400)}
    return signing.dumps(payload, salt=SALT)


def read_token(token: str, *, now: float | None = None) -> EmbedGrant:
    try:
        payload: Any = signing.loads(token, salt=SALT)
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise InvalidEmbedToken("bad signature") from exc
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("sid"), str)
        and isinstance(payload.get("exp"), int)
    ):
        raise InvalidEmbedToken("malformed payload")
    if payload["exp"] <= (time.time() if now is None else now):
        raise InvalidEmbedToken("expired")
    return EmbedGrant(
        session_id=payload["sid"],
        expires_at=dt.datetime.fromtimestamp(payload["exp"], tz=dt.UTC),
    )


def grant_for(token: str | None, session_id: str, *, now: float | None = None) -> EmbedGrant:
    """The grant if `token` is valid for `session_id`; InvalidEmbedToken otherwise."""
    if not token:
        raise InvalidEmbedToken("missing")
    grant = read_token(token, now=now)
    if grant.session_id != session_id:
        raise InvalidEmbedToken("made for another session")
    return grant


def widget_path(session_id: str, token: str) -> str:
    return f"{reverse('embed-session', args=[session_id])}?{urlencode({'token': token})}"


def iframe_markup(url: str) -> str:
    """The snippet as plain text: templates escape it to show it, never run it by accident."""
    # sandbox keeps the widget from navigating or opening popups in the embedding page;
    # allow-same-origin keeps its own origin so its live socket passes the origin check.
    return (
        f'<iframe src="{escape(url)}" title="Meeting bot status" width="{WIDGET_WIDTH}" '
        f'height="{WIDGET_HEIGHT}" style="border:0;overflow:hidden" loading="lazy" '
        'referrerpolicy="no-referrer" sandbox="allow-scripts allow-same-origin"></iframe>'
    )


def iframe_snippet(request: HttpRequest, session_id: str, *, days: int | None = None) -> str:
    url = request.build_absolute_uri(widget_path(session_id, make_token(session_id, days=days)))
    return iframe_markup(url)


def iframe_snippet_for_base(base_url: str, session_id: str, *, days: int | None = None) -> str:
    url = base_url.rstrip("/") + widget_path(session_id, make_token(session_id, days=days))
    return iframe_markup(url)


def live_path(session_id: str, token: str) -> str:
    return f"/ws/embed/sessions/{session_id}/?{urlencode({'token': token})}"


def allowed_origins() -> list[str]:
    """MEETINGDASH_EMBED_ORIGINS, keeping only well-formed origins (no CSP injection)."""
    origins = []
    for origin in settings.MEETINGDASH_EMBED_ORIGINS:
        if _ORIGIN_RE.fullmatch(origin.rstrip("/")):
            origins.append(origin.rstrip("/"))
        else:
            logger.warning("MEETINGDASH_EMBED_ORIGINS: ignoring %r (not an origin)", origin)
    return origins


def frame_ancestors() -> str:
    """CSP source list of who may frame the widget: our own pages and the configured origins."""
    return " ".join(["'self'", *allowed_origins()])
