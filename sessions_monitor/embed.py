"""Signed, expiring, revocable, read-only tokens for the embeddable status widget.

A token names exactly one session, when it was issued and when it expires, signed with
SECRET_KEY under its own salt (so no other signed value of the project can pass for one).
Tokens themselves are not stored; an `EmbedRevocation` row makes every token of one session
(or of all sessions) issued up to its time invalid.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db.models import Max, Q
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import urlencode

from sessions_monitor.models import EmbedRevocation

logger = logging.getLogger(__name__)

SALT = "meetingdash.embed.v1"
MAX_DAYS = 3650
# Far beyond any token we issue, well inside what datetime can represent.
_MAX_EXP = 2**36
_EPOCH = dt.datetime.fromtimestamp(0, tz=dt.UTC)
WIDGET_WIDTH = 300
WIDGET_HEIGHT = 100
# scheme://host[:port], host may be a wildcard subdomain as CSP allows (https://*.example.com).
_ORIGIN_RE = re.compile(r"https?://((\*\.)?[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(:[0-9]{1,5})?")


class InvalidEmbedToken(Exception):
    """Tampered, expired, malformed, or made for another session."""


@dataclass(frozen=True)
class EmbedGrant:
    session_id: str
    expires_at: dt.datetime
    issued_at: dt.datetime


def default_days() -> int:
    return int(settings.MEETINGDASH_EMBED_TOKEN_DAYS)


def make_token(session_id: str, *, days: int | None = None, now: float | None = None) -> str:
    days = default_days() if days is None else days
    if not 0 < days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    issued = time.time() if now is None else now
    # iat in milliseconds: a revocation in the same second must not spare a later token.
    payload = {"sid": session_id, "exp": int(issued + days * 86400), "iat": int(issued * 1000)}
    return signing.dumps(payload, salt=SALT)


def _timestamp(payload: dict[str, Any], name: str, scale: int) -> dt.datetime:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_EXP * scale:
        raise InvalidEmbedToken(f"malformed {name}")
    return dt.datetime.fromtimestamp(value / scale, tz=dt.UTC)


def read_token(token: str, *, now: float | None = None) -> EmbedGrant:
    """Never raises anything but InvalidEmbedToken, whatever the token holds."""
    if not isinstance(token, str) or len(token) > 1000:
        raise InvalidEmbedToken("malformed token")
    try:
        payload: Any = signing.loads(token, salt=SALT)
    except (signing.BadSignature, ValueError, TypeError, UnicodeError) as exc:
        raise InvalidEmbedToken("bad signature") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("sid"), str):
        raise InvalidEmbedToken("malformed payload")
    expires_at = _timestamp(payload, "exp", 1)
    # Tokens from before revocation existed carry no iat: issued at the epoch, so any
    # revocation covers them.
    issued_at = _timestamp(payload, "iat", 1000) if "iat" in payload else _EPOCH
    if expires_at.timestamp() <= (time.time() if now is None else now):
        raise InvalidEmbedToken("expired")
    return EmbedGrant(session_id=payload["sid"], expires_at=expires_at, issued_at=issued_at)


def grant_for(token: str | None, session_id: str, *, now: float | None = None) -> EmbedGrant:
    """The grant if `token` is signed and unexpired for `session_id` (no revocation check:
    see `valid_grant`); InvalidEmbedToken otherwise."""
    if not token:
        raise InvalidEmbedToken("missing")
    grant = read_token(token, now=now)
    if grant.session_id != session_id:
        raise InvalidEmbedToken("made for another session")
    return grant


def is_revoked(grant: EmbedGrant) -> bool:
    return EmbedRevocation.objects.filter(
        Q(session__isnull=True) | Q(session_id=grant.session_id),
        revoked_at__gte=grant.issued_at,
    ).exists()


def last_revocation(session_id: str) -> dt.datetime | None:
    """When the session's widget links (or everyone's) were last revoked: links issued up to
    then are refused. One answer serves every token of the session, whatever its issue time,
    so concurrent widget connects can share one read (`is_revoked` is per grant)."""
    latest: dt.datetime | None = EmbedRevocation.objects.filter(
        Q(session__isnull=True) | Q(session_id=session_id)
    ).aggregate(latest=Max("revoked_at"))["latest"]
    return latest


def revoked_by(grant: EmbedGrant, latest_revocation: dt.datetime | None) -> bool:
    return latest_revocation is not None and latest_revocation >= grant.issued_at


def valid_grant(token: str | None, session_id: str) -> EmbedGrant:
    """`grant_for`, and not revoked since it was issued (one indexed query)."""
    grant = grant_for(token, session_id)
    if is_revoked(grant):
        raise InvalidEmbedToken("revoked")
    return grant


def token_fingerprint(token: str) -> str:
    """Names a widget token in logs and limits without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def widget_path(session_id: str, token: str) -> str:
    return f"{reverse('embed-session', args=[session_id])}?{urlencode({'token': token})}"


def iframe_markup(url: str) -> str:
    """The snippet as plain text: templates escape it to show it, never run it by accident.
    (Its inline style is for the embedding page; our own preview uses a class instead.)"""
    # sandbox keeps the widget from navigating the embedding page; allow-same-origin keeps
    # its own origin so its live socket passes the origin check; allow-popups lets its
    # optional "Open in MeetingDash" link (link=1) open a new tab.
    return (
        f'<iframe src="{escape(url)}" title="Meeting bot status" width="{WIDGET_WIDTH}" '
        f'height="{WIDGET_HEIGHT}" style="border:0;overflow:hidden" loading="lazy" '
        'referrerpolicy="no-referrer" '
        'sandbox="allow-scripts allow-same-origin allow-popups allow-popups-to-escape-sandbox">'
        "</iframe>"
    )


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
