"""Operating bots: send one into a meeting, stop one, and the audit trail of both (issue 15).

One service for every way in (the page, the API for programs, the admin): each call asks the
upstream once, writes exactly one `ControlAction` whatever happens (an unexpected exception
included), and answers with a `ControlResult` whose `message` is plain words for people:
never the upstream token, never a URL with credentials in it.

Whether a stop was a no-op is decided from what we knew *before* the call: the session's
status here (from events) or the last Session object the upstream gave us (`raw`, stored on
every send and stop answer). The upstream's stop is idempotent and answers with the current
state, so it is called anyway; its answer alone cannot tell "stopped now" from "had stopped".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from channels.db import database_sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser

from sessions_monitor import lookups, services
from sessions_monitor.models import (
    ControlAction,
    ControlKind,
    ControlOutcomeKind,
    MeetingSession,
)
from sessions_monitor.simulator.scenarios import detect_platform
from sessions_monitor.upstream import (
    TERMINAL_STATUSES,
    MeetingBuddyClient,
    UpstreamError,
    UpstreamSession,
    validate_session_id,
)

logger = logging.getLogger(__name__)

CONTROL_PERMISSION = "sessions_monitor.control_session"

MSG_SENT = "Bot sent; it is joining."
MSG_STOPPING = "Stop requested; the bot is leaving."
MSG_ALREADY_STOPPED = "This bot had already stopped ({status})."
MSG_CREDENTIALS = "MeetingDash's credentials for Meeting Buddy were refused: tell an administrator."
MSG_BUSY = "Meeting Buddy is busy: try again in {seconds} s."
MSG_BUSY_NO_HINT = "Meeting Buddy is busy: try again in a moment."
MSG_UNAVAILABLE = "Meeting Buddy is unavailable right now: try again shortly."
MSG_NOT_CONFIGURED = "No Meeting Buddy connection is configured: tell an administrator."
MSG_NOT_ALLOWED = "You are not allowed to send or stop bots."
MSG_NOT_FOUND = "Meeting Buddy does not know this session."
MSG_BAD_SESSION_ID = "This is not a valid Meeting Buddy session id."
MSG_INVALID = "Meeting Buddy did not accept this: {reason}"
MSG_REFUSED = "Meeting Buddy refused the request (HTTP {status})."
MSG_UNEXPECTED = "Something went wrong while asking Meeting Buddy: try again shortly."
MSG_BAD_LINK = "Enter an HTTPS link to a Microsoft Teams, Zoom, Google Meet or Webex meeting."


def can_control(user: Any) -> bool:
    return bool(user.is_authenticated and user.has_perm(CONTROL_PERMISSION))


def detail_context(user: Any, session_id: str) -> dict[str, Any]:
    """What the detail page's control tools and audit trail need."""
    return {
        "can_control": can_control(user),
        "control_actions": list(ControlAction.objects.filter(session_id=session_id)),
    }


@dataclass(frozen=True)
class ControlResult:
    """What one send or stop came to: for the page's message, the API's answer, the admin."""

    outcome: ControlOutcomeKind
    message: str
    session_id: str | None
    audit: ControlAction
    upstream_status: int | None
    upstream_body: Any
    retry_after: float | None = None
    field_errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in (ControlOutcomeKind.DONE, ControlOutcomeKind.NO_OP)


def validate_meeting_link(link: str) -> str | None:
    """None when the upstream would accept `link` (an HTTPS Teams, Zoom, Meet or Webex
    link, checked the way the simulator checks it), else the form field's error."""
    if not isinstance(link, str) or detect_platform(link.strip()) is None:
        return MSG_BAD_LINK
    return None


# --- the two actions ---------------------------------------------------------------------


async def asend_bot(
    *,
    actor: AbstractBaseUser,
    via: str,
    meeting_link: str,
    bot_name: str = "",
    transcription_enabled: bool = True,
    transcription_language: str = "en",
) -> ControlResult:
    """Ask the upstream for a bot in this meeting; on success store and watch the session.

    The link is not checked here: the upstream decides (forms check it first with
    `validate_meeting_link`, so people hear about a typo without a round trip)."""
    request = {
        "meeting_link": meeting_link,
        "bot_name": bot_name,
        "transcription_enabled": transcription_enabled,
        "transcription_language": transcription_language,
    }
    attempt = _Attempt(ControlKind.SEND, actor, via, _audited_request(request))
    return await attempt.run(lambda: _send(request))


async def astop_bot(*, actor: AbstractBaseUser, via: str, session_id: str) -> ControlResult:
    """Ask the upstream to stop this session's bot (idempotent): DONE, or NO_OP when it had
    already stopped as far as we knew before asking."""
    attempt = _Attempt(ControlKind.STOP, actor, via, {"session_id": session_id}, session_id)
    return await attempt.run(lambda: _stop(session_id))


async def astop_bots(
    *, actor: AbstractBaseUser, via: str, session_ids: Iterable[str]
) -> list[ControlResult]:
    """`astop_bot` for each id in turn (one audit row each): the admin's bulk action, which
    runs them in one event loop so they share one upstream client."""
    return [
        await astop_bot(actor=actor, via=via, session_id=session_id) for session_id in session_ids
    ]


# --- what each action does upstream -----------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    outcome: ControlOutcomeKind
    message: str
    session: UpstreamSession


async def _send(request: Mapping[str, Any]) -> _Answer:
    client = _client()
    options = {key: value for key, value in request.items() if key != "meeting_link"}
    if not options["bot_name"]:
        options.pop("bot_name")
    session = await client.start_session(request["meeting_link"], **options)
    await database_sync_to_async(_store)(session)
    await services.arequest_watch(session.session_id)
    return _Answer(ControlOutcomeKind.DONE, MSG_SENT, session)


async def _stop(session_id: str) -> _Answer:
    client = _client()
    session_id = validate_session_id(session_id)
    stopped_before = await database_sync_to_async(_known_terminal_status)(session_id)
    session = await client.stop_session(session_id)
    await database_sync_to_async(_store)(session)
    if stopped_before:
        return _Answer(
            ControlOutcomeKind.NO_OP, MSG_ALREADY_STOPPED.format(status=stopped_before), session
        )
    return _Answer(ControlOutcomeKind.DONE, MSG_STOPPING, session)


class _NotConfigured(Exception):
    pass


class _NotAllowed(Exception):
    pass


def _client() -> MeetingBuddyClient:
    client = lookups.shared_client()
    if client is None:
        raise _NotConfigured
    return client


def _known_terminal_status(session_id: str) -> str:
    """The terminal status we knew of ("" if none): from events, else from the upstream's
    last answer stored here."""
    row = MeetingSession.objects.filter(pk=session_id).values("status", "raw").first()
    if row is None:
        return ""
    if row["status"] in TERMINAL_STATUSES:
        return str(row["status"])
    raw_status = row["raw"].get("status") if isinstance(row["raw"], dict) else None
    return str(raw_status) if raw_status in TERMINAL_STATUSES else ""


def _store(session: UpstreamSession) -> None:
    services.upsert_session_metadata(
        session.session_id,
        bot_name=session.bot_name,
        meeting_link=session.meeting_link,
        platform=session.platform,
        created_at=session.created_at,
        raw=session_json(session),
    )


# --- one attempt: run it, turn any failure into words, write the audit row ---------------


@dataclass
class _Attempt:
    action: ControlKind
    actor: AbstractBaseUser
    via: str
    request: dict[str, Any]
    session_id: str | None = None

    async def run(self, call: Callable[[], Awaitable[_Answer]]) -> ControlResult:
        try:
            if not await database_sync_to_async(can_control)(self.actor):
                raise _NotAllowed
            answer = await call()
        except UpstreamError as exc:
            return await self._failed(exc)
        except _NotAllowed:
            return await self._finish(ControlOutcomeKind.REFUSED, MSG_NOT_ALLOWED)
        except _NotConfigured:
            return await self._finish(ControlOutcomeKind.FAILED, MSG_NOT_CONFIGURED)
        except Exception as exc:
            logger.exception(
                "control: %s failed unexpectedly (%s)", self.action, type(exc).__name__
            )
            return await self._finish(ControlOutcomeKind.FAILED, MSG_UNEXPECTED, code="UNEXPECTED")
        self.session_id = answer.session.session_id
        return await self._finish(
            answer.outcome, answer.message, status=200, body=session_json(answer.session)
        )

    async def _failed(self, exc: UpstreamError) -> ControlResult:
        if exc.status is not None:
            logger.info("control: %s answered upstream with %s", self.action, exc)
        else:
            logger.warning("control: %s got no upstream answer: %s", self.action, exc)
        return await self._finish(
            failure_outcome(exc),
            failure_message(exc),
            status=exc.status,
            body=error_body(exc),
            code=exc.code,
            retry_after=exc.retry_after,
            field_errors=field_errors(exc),
        )

    async def _finish(
        self,
        outcome: ControlOutcomeKind,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        code: str = "",
        retry_after: float | None = None,
        field_errors: dict[str, str] | None = None,
    ) -> ControlResult:
        if status == 200 and self.action is ControlKind.SEND:
            # The client hands back the body, not the status; §5.1 leaves it open, and the
            # simulator and the SDK ("created") answer 201.
            status = 201
        audit = await _write_audit(
            action=self.action,
            actor=self.actor,
            via=self.via,
            session_id=self.session_id,
            request=self.request,
            outcome=outcome,
            upstream_status=status,
            upstream_code=code,
            message=message,
        )
        return ControlResult(
            outcome=outcome,
            message=message,
            session_id=self.session_id,
            audit=audit,
            upstream_status=status,
            upstream_body=body,
            retry_after=retry_after,
            field_errors=field_errors or {},
        )


async def _write_audit(
    *,
    action: ControlKind,
    actor: AbstractBaseUser,
    via: str,
    session_id: str | None,
    request: dict[str, Any],
    outcome: ControlOutcomeKind,
    upstream_status: int | None,
    upstream_code: str,
    message: str,
) -> ControlAction:
    known = session_id is not None and await MeetingSession.objects.filter(pk=session_id).aexists()
    return await ControlAction.objects.acreate(
        session_id=session_id if known else None,
        session_ref=(session_id or "")[:128],
        action=action,
        actor=cast(Any, actor) if getattr(actor, "pk", None) is not None else None,
        actor_name=actor.get_username()[:150] if actor.is_authenticated else "",
        via=via[:20],
        request=request,
        outcome=outcome,
        upstream_status=upstream_status,
        upstream_code=upstream_code[:100],
        message=message,
    )


# --- failures in plain words -------------------------------------------------------------


def failure_outcome(exc: UpstreamError) -> ControlOutcomeKind:
    """REFUSED when the upstream (or our own id check) said no, FAILED when it could not
    answer: 5xx, a transport error, a timeout, an unreadable answer."""
    if exc.status is None:
        return ControlOutcomeKind.REFUSED if exc.permanent else ControlOutcomeKind.FAILED
    return ControlOutcomeKind.REFUSED if 400 <= exc.status < 500 else ControlOutcomeKind.FAILED


def failure_message(exc: UpstreamError) -> str:
    """What to tell people about an upstream failure (the token is never part of it)."""
    status = exc.status
    if status in (401, 403):
        return MSG_CREDENTIALS
    if status == 404:
        return MSG_NOT_FOUND
    if status == 422:
        if exc.code == "INVALID_SESSION_ID_FORMAT":
            return MSG_BAD_SESSION_ID
        return MSG_INVALID.format(reason=_sentence(exc.message))
    if status == 429:
        if exc.retry_after is None:
            return MSG_BUSY_NO_HINT
        return MSG_BUSY.format(seconds=max(1, math.ceil(exc.retry_after)))
    if status is None and exc.code == "INVALID_SESSION_ID_FORMAT":
        return MSG_BAD_SESSION_ID
    if status is not None and 400 <= status < 500:
        return MSG_REFUSED.format(status=status)
    return MSG_UNAVAILABLE


def field_errors(exc: UpstreamError) -> dict[str, str]:
    """Per request field, from a 422 envelope whose `details.field` names the field."""
    if exc.status != 422:
        return {}
    name = exc.details.get("field")
    if isinstance(name, str) and name:
        return {name: _sentence(exc.message)}
    return {}


def error_body(exc: UpstreamError) -> dict[str, Any] | None:
    """The upstream's error envelope (§7.1) as far as the client kept it; None without an
    HTTP answer."""
    if exc.status is None:
        return None
    error: dict[str, Any] = {
        "code": exc.code,
        "message": exc.message,
        "status": exc.status,
        "details": exc.details,
    }
    if exc.trace_id:
        error["trace_id"] = exc.trace_id
    return {"success": False, "error": error}


def _sentence(text: str) -> str:
    text = text.strip() or "the request is not valid"
    return text if text.endswith((".", "!", "?")) else f"{text}."


# --- the Session object as JSON ----------------------------------------------------------


def session_json(session: UpstreamSession) -> dict[str, Any]:
    """The upstream's Session object again: its typed fields plus the ones it kept in
    `extra`, timestamps in the upstream's format (UTC, `Z`)."""
    body: dict[str, Any] = {}
    for item in fields(session):
        if item.name == "extra":
            continue
        value = getattr(session, item.name)
        body[item.name] = _timestamp(value) if isinstance(value, datetime) else value
    body.update(session.extra)
    return body


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _audited_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """What was asked, minus any credentials written into the link's authority."""
    audited = dict(request)
    audited["meeting_link"] = without_userinfo(str(request.get("meeting_link", "")))
    return audited


def without_userinfo(link: str) -> str:
    try:
        parts = urlsplit(link)
    except ValueError:
        return link
    if "@" not in parts.netloc:
        return link
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))
