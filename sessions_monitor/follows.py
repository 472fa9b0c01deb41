"""Following a session or a bot name, and the toasts of what someone follows.

A user follows one session, or every session of a bot name (matched case-insensitively:
"Notetaker" and "notetaker" are one bot). The writes and reads of `Follow` are here, with the
toast a `session.alert` becomes; the views (`follow_views`) and the page consumers call them.

Who follows an alert's session is read from the database once per process per alert
(`followers_of`, shared by every page of the process: `consumers._LiveConsumer._toasts`), so
a follow or unfollow counts from the next alert on, with nothing cached to invalidate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from sessions_monitor import presentation
from sessions_monitor.messages import HubMessage
from sessions_monitor.models import Follow, MeetingSession

BOT_NAME_MAX = Follow._meta.get_field("bot_name").max_length or 200
TOAST_TEMPLATE = "follows/toast.html"


class BadBotName(ValueError):
    """An empty bot name, or one longer than a bot name can be."""


def clean_bot_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > BOT_NAME_MAX:
        raise BadBotName(name)
    return cleaned


@dataclass(frozen=True)
class FollowState:
    """What a user follows of one session: the session itself, and its bot's name."""

    session_id: str
    bot_name: str
    session_followed: bool
    bot_followed: bool


@dataclass(frozen=True)
class FollowedSession:
    session_id: str
    bot_name: str
    status_label: str
    tone: str
    since: datetime


@dataclass(frozen=True)
class FollowedBot:
    bot_name: str
    since: datetime


@dataclass(frozen=True)
class Following:
    sessions: list[FollowedSession]
    bots: list[FollowedBot]


# --- writes -------------------------------------------------------------------------------


def set_session_follow(*, user_id: int, session_id: str, follow: bool) -> bool:
    """Follow (or stop following) one session; idempotent. Returns whether it is followed."""
    if not follow:
        Follow.objects.filter(user_id=user_id, session_id=session_id).delete()
        return False
    try:
        with transaction.atomic():
            Follow.objects.get_or_create(user_id=user_id, session_id=session_id)
    except IntegrityError:  # the same follow, made at the same moment by another request
        pass
    return True


def set_bot_follow(*, user_id: int, bot_name: str, follow: bool) -> bool:
    """Follow (or stop following) every session of a bot name, whatever its case; idempotent.
    The first spelling followed is the one kept. Raises BadBotName."""
    name = clean_bot_name(bot_name)
    existing = Follow.objects.filter(user_id=user_id, bot_name__iexact=name)
    if not follow:
        existing.delete()
        return False
    if existing.exists():
        return True
    try:
        with transaction.atomic():
            Follow.objects.create(user_id=user_id, bot_name=name)
    except IntegrityError:
        pass
    return True


def toggle_session_follow(*, user_id: int, session_id: str) -> bool:
    followed = Follow.objects.filter(user_id=user_id, session_id=session_id).exists()
    return set_session_follow(user_id=user_id, session_id=session_id, follow=not followed)


def toggle_bot_follow(*, user_id: int, bot_name: str) -> bool:
    name = clean_bot_name(bot_name)
    followed = Follow.objects.filter(user_id=user_id, bot_name__iexact=name).exists()
    return set_bot_follow(user_id=user_id, bot_name=name, follow=not followed)


# --- reads --------------------------------------------------------------------------------


def session_bot_name(session_id: str) -> str | None:
    """The bot name of a stored session ('' when it has none), None when it is not stored."""
    row = MeetingSession.objects.filter(pk=session_id).values_list("bot_name", flat=True).first()
    return None if row is None else str(row)


def follow_state(*, user_id: int, session_id: str, bot_name: str) -> FollowState:
    rows = Follow.objects.filter(user_id=user_id).filter(_about(session_id, bot_name))
    found = list(rows.values_list("session_id", "bot_name"))
    return FollowState(
        session_id=session_id,
        bot_name=bot_name,
        session_followed=any(followed == session_id for followed, _ in found),
        bot_followed=bool(bot_name) and any(name for _, name in found),
    )


def detail_context(
    user_id: int | None, session: presentation.SessionView, *, next: str
) -> dict[str, Any]:
    """The follow buttons of a session's page (`follows/buttons.html#follow-tools`)."""
    if user_id is None:
        raise ValueError("only a signed-in user follows anything")
    state = follow_state(user_id=user_id, session_id=session.session_id, bot_name=session.bot_name)
    return {
        "follow_session_id": state.session_id,
        "session_followed": state.session_followed,
        "follow_bot_name": state.bot_name.strip(),
        "bot_followed": state.bot_followed,
        "next": next,
    }


def followers_of(session_id: str, bot_name: str) -> frozenset[int]:
    """The users who follow this session or its bot name."""
    rows = Follow.objects.filter(_about(session_id, bot_name)).values_list("user_id", flat=True)
    return frozenset(rows)


def is_followed_by(user_id: int, *, session_id: str, bot_name: str) -> bool:
    return Follow.objects.filter(user_id=user_id).filter(_about(session_id, bot_name)).exists()


def following(user_id: int) -> Following:
    """What a user follows, newest first: sessions (with their status now) and bot names."""
    rows = (
        Follow.objects.filter(user_id=user_id)
        .select_related("session")
        .order_by("-created_at", "-pk")
    )
    sessions: list[FollowedSession] = []
    bots: list[FollowedBot] = []
    for row in rows:
        if row.session is not None:
            session = row.session
            sessions.append(
                FollowedSession(
                    session.session_id,
                    session.bot_name,
                    presentation.status_label(session.status),
                    presentation.status_tone(session.status),
                    row.created_at,
                )
            )
        elif row.bot_name:
            bots.append(FollowedBot(row.bot_name, row.created_at))
    return Following(sessions, bots)


def _about(session_id: str, bot_name: str) -> Q:
    """Follows of this session, or of its bot name (case-insensitively)."""
    condition = Q(session_id=session_id)
    name = bot_name.strip()
    if name:
        condition |= Q(session__isnull=True, bot_name__iexact=name)
    return condition


# --- toasts -------------------------------------------------------------------------------

_KINDS: dict[str, tuple[str, str]] = {
    # kind -> (what happened, tone)
    "failed": ("failed", "bad"),
    "lost": ("lost contact", "bad"),
    "stuck": ("is stuck", "warn"),
    "resolved": ("moved on", "live"),
}


@dataclass(frozen=True)
class Toast:
    """One alert as a toast and a browser notification; the same for every follower."""

    id: str
    kind: str
    title: str
    text: str
    url: str
    tone: str
    at: datetime

    @property
    def urgent(self) -> bool:
        """Failed or lost: announced at once (role=alert), and it stays until dismissed."""
        return self.kind in ("failed", "lost")

    @property
    def transient(self) -> bool:
        """Good news fades by itself after a while (static/js/notify.js)."""
        return self.kind == "resolved"


def toast_view(alert: Mapping[str, Any]) -> Toast:
    """From a `session.alert`'s fields (`messages.AlertMessage`)."""
    kind = str(alert.get("kind") or "")
    session_id = str(alert.get("session_id") or "")
    what, tone = _KINDS.get(kind, (kind, "unknown"))
    at_text = str(alert.get("at") or "")
    digest = hashlib.sha256(f"{kind}|{session_id}|{at_text}".encode()).hexdigest()[:16]
    who = str(alert.get("bot_name") or "") or session_id
    return Toast(
        id=f"alert-{digest}",
        kind=kind,
        title=f"{who} {what}",
        text=str(alert.get("text") or ""),
        url=reverse("session-detail", args=[session_id]),
        tone=tone,
        at=presentation.as_datetime(at_text) or timezone.now(),
    )


def render_toast(message: HubMessage) -> str:
    """The toast of an alert, out of band at the top of `#toasts` (once per process per alert:
    `message.render("…", render_toast)`)."""
    return render_to_string(f"{TOAST_TEMPLATE}#toast-oob", {"toast": toast_view(message.data)})
