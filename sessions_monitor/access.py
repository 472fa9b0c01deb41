"""Who may hold a live connection, checked again while it is open.

Streams and sockets outlive the request that opened them, so checking access at connect
time only would let a revoked API token, a logged-out session, a deactivated user or a
revoked widget link go on receiving events for hours. Every open connection asks
`still_valid()` every `check_interval()` seconds (half the keepalive interval, so access
ends within one keepalive interval); the answer is shared per process for that long, so a
thousand connections of one credential cost one query per interval, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from typing import Any, Literal

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth

from sessions_monitor import embed, tokens
from sessions_monitor.models import ApiToken
from sessions_monitor.security import header

logger = logging.getLogger(__name__)

Kind = Literal["token", "session", "widget"]


@dataclass(frozen=True, slots=True)
class Credential:
    """What a connection was let in with: an API token's row id, a session key, or a widget
    token. Session keys and widget tokens are secrets: they stay in this process's memory
    and never appear in logs (`label` is what may)."""

    kind: Kind
    key: str
    user_id: int | None = None
    session_id: str | None = None

    @property
    def label(self) -> str:
        """For logs and limits: never the secret itself."""
        if self.kind == "token":
            return f"token:{self.key}"
        if self.kind == "session":
            return f"user:{self.user_id}"
        return f"widget:{self.session_id}:{embed.token_fingerprint(self.key)}"


def check_interval() -> float:
    return max(0.2, float(settings.MEETINGDASH_KEEPALIVE_SECONDS) / 2)


async def credential_for_stream(scope: dict[str, Any]) -> Credential | None:
    """Bearer API token, or else a logged-in (cookie) session; None when neither."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        owner = await database_sync_to_async(tokens.authenticate)(presented.strip())
        if owner is None:
            return None
        return Credential("token", str(owner.token_id), user_id=owner.user_id)
    return credential_for_user(scope)


def credential_for_user(scope: dict[str, Any]) -> Credential | None:
    """The logged-in user of a cookie session (AuthMiddlewareStack has set scope["user"])."""
    user = scope.get("user")
    session = scope.get("session")
    if user is None or not user.is_authenticated or not user.is_active or session is None:
        return None
    if not session.session_key:
        return None
    return Credential("session", session.session_key, user_id=user.pk)


def credential_for_widget(token: str, session_id: str) -> Credential:
    return Credential("widget", token, session_id=session_id)


# --- re-checking ----------------------------------------------------------------------------


def _token_valid(credential: Credential) -> bool:
    return ApiToken.objects.filter(
        pk=int(credential.key), revoked_at__isnull=True, user__is_active=True
    ).exists()


def _session_valid(credential: Credential) -> bool:
    """What Django's auth middleware would decide for the next request with this cookie:
    the session still exists (logout deletes it), is not expired, names the same active
    user, and its password hash still matches (a password change signs out)."""
    engine = import_module(settings.SESSION_ENGINE)
    request = SimpleNamespace(session=engine.SessionStore(credential.key))
    user = auth.get_user(request)  # type: ignore[arg-type]
    return bool(user.is_authenticated and user.pk == credential.user_id and user.is_active)


def _widget_valid(credential: Credential) -> bool:
    assert credential.session_id is not None
    try:
        embed.valid_grant(credential.key, credential.session_id)
    except embed.InvalidEmbedToken:
        return False
    return True


_CHECKS = {"token": _token_valid, "session": _session_valid, "widget": _widget_valid}


def check_now(credential: Credential) -> bool:
    """Uncached, synchronous: is the credential still good?"""
    return bool(_CHECKS[credential.kind](credential))


class _Verdicts:
    """Per-process, per-loop cache of `check_now` answers with single flight."""

    def __init__(self) -> None:
        self._answers: dict[Credential, tuple[float, asyncio.Future[bool]]] = {}

    async def get(self, credential: Credential) -> bool:
        now = time.monotonic()
        cached = self._answers.get(credential)
        if cached is None or now - cached[0] >= check_interval():
            future = asyncio.ensure_future(database_sync_to_async(check_now)(credential))
            self._answers[credential] = cached = (now, future)
            if len(self._answers) > 10_000:
                self._forget_old(now)
        try:
            return await asyncio.shield(cached[1])
        except Exception as exc:
            # The database is unreachable: keep the connection (the page says so by other
            # means) rather than cut everybody off during an outage.
            logger.warning("access check failed (%s); keeping the connection", type(exc).__name__)
            self._answers.pop(credential, None)
            return True

    def _forget_old(self, now: float) -> None:
        for credential, (at, _future) in list(self._answers.items()):
            if now - at >= check_interval():
                del self._answers[credential]


_verdicts: dict[int, _Verdicts] = {}


async def still_valid(credential: Credential) -> bool:
    loop = asyncio.get_running_loop()
    verdicts = _verdicts.get(id(loop))
    if verdicts is None:
        _verdicts.clear()  # a new loop (tests): the old one's futures are useless
        verdicts = _verdicts[id(loop)] = _Verdicts()
    return await verdicts.get(credential)
