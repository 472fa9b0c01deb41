"""Sending and stopping bots (control.py) against the real simulator over a real socket."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User

from sessions_monitor import control, messages
from sessions_monitor.models import ControlAction, ControlKind, ControlOutcomeKind, MeetingSession
from tests.conftest import UPSTREAM_TOKEN
from tests.simulator_helpers import new_session_id

pytestmark = pytest.mark.django_db(transaction=True)

WRONG_TOKEN = "mb-secret-" + "x" * 24
MEET_LINK = "https://meet.google.com/abc-defg-hij"


def _operator() -> User:
    user = User.objects.create_user(f"op-{uuid.uuid4().hex[:6]}")
    user.user_permissions.add(Permission.objects.get(codename="control_session"))
    return User.objects.get(pk=user.pk)  # a fresh instance: no stale permission cache


@pytest.fixture
async def operator() -> User:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(_operator)()


async def audit_rows() -> list[ControlAction]:
    return [row async for row in ControlAction.objects.order_by("requested_at", "id")]


def assert_no_secret(secret: str, result: control.ControlResult, caplog: Any) -> None:
    audit = result.audit
    seen = [result.message, str(result.upstream_body), audit.message, str(audit.request)]
    seen += [audit.upstream_code, caplog.text]
    assert not any(secret in text for text in seen)


# --- validate_meeting_link ---------------------------------------------------------------


@pytest.mark.parametrize(
    "link",
    [
        MEET_LINK,
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0",
        "https://us02web.zoom.us/j/123456789",
        "https://acme.webex.com/meet/standup",
    ],
)
def test_supported_links_pass(link: str) -> None:
    assert control.validate_meeting_link(link) is None


@pytest.mark.parametrize(
    "link", ["", "http://meet.google.com/abc", "https://example.com/j/1", "not a link"]
)
def test_other_links_get_a_plain_error(link: str) -> None:
    assert control.validate_meeting_link(link) == control.MSG_BAD_LINK


# --- send --------------------------------------------------------------------------------


async def test_send_stores_watches_and_audits(
    upstream: Any, operator: User, fresh_channel_layer: Any
) -> None:
    result = await control.asend_bot(
        actor=operator, via="page", meeting_link=MEET_LINK, bot_name="Scribe"
    )
    assert result.ok and result.outcome == ControlOutcomeKind.DONE
    assert result.message == "Bot sent; it is joining."
    assert result.upstream_status == 201
    assert result.upstream_body["meeting_link"] == MEET_LINK
    assert result.upstream_body["status"] == "initializing"
    session_id = result.session_id
    assert session_id is not None and session_id.startswith("mbsess_")
    stored = await MeetingSession.objects.aget(pk=session_id)
    assert stored.watched and stored.bot_name == "Scribe" and stored.platform == "google_meet"
    assert stored.raw["session_id"] == session_id
    # On Redis the relay channel may still hold other tests' requests: find this one's.
    wanted = messages.watch_message(session_id, watched=True)
    async with asyncio.timeout(10):
        while (told := await fresh_channel_layer.receive(messages.RELAY_CHANNEL)) != wanted:
            assert told.get("session_id") != session_id, told
    [audit] = await audit_rows()
    assert audit.pk == result.audit.pk
    assert audit.action == ControlKind.SEND and audit.outcome == ControlOutcomeKind.DONE
    assert audit.session_id == session_id and audit.session_ref == session_id
    assert audit.actor_id == operator.pk and audit.actor_name == operator.username
    assert audit.via == "page" and audit.upstream_status == 201
    assert audit.request == {
        "meeting_link": MEET_LINK,
        "bot_name": "Scribe",
        "transcription_enabled": True,
        "transcription_language": "en",
    }


async def test_send_with_a_bad_link_maps_the_field_error(upstream: Any, operator: User) -> None:
    result = await control.asend_bot(
        actor=operator, via="page", meeting_link="https://example.com/meeting"
    )
    assert result.outcome == ControlOutcomeKind.REFUSED and not result.ok
    assert result.upstream_status == 422
    assert set(result.field_errors) == {"meeting_link"}
    assert "HTTPS link" in result.field_errors["meeting_link"]
    assert result.message.startswith("Meeting Buddy did not accept this:")
    assert result.upstream_body["error"]["code"] == "VALIDATION_ERROR"
    [audit] = await audit_rows()
    assert audit.outcome == ControlOutcomeKind.REFUSED and audit.upstream_status == 422
    assert audit.session_id is None and audit.upstream_code == "VALIDATION_ERROR"
    assert not await MeetingSession.objects.aexists()


async def test_wrong_upstream_token_is_refused_without_showing_it(
    upstream: Any, operator: User, settings: Any, caplog: Any
) -> None:
    settings.MEETINGBUDDY_API_TOKEN = WRONG_TOKEN
    caplog.set_level(logging.DEBUG)
    result = await control.asend_bot(actor=operator, via="api", meeting_link=MEET_LINK)
    assert result.outcome == ControlOutcomeKind.REFUSED
    assert result.upstream_status == 401
    assert result.message == (
        "MeetingDash's credentials for Meeting Buddy were refused: tell an administrator."
    )
    [audit] = await audit_rows()
    assert audit.upstream_status == 401 and audit.message == result.message
    assert_no_secret(WRONG_TOKEN, result, caplog)


async def test_rate_limited_send_says_when_to_retry(
    upstream: Any, operator: User, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.control.set_faults(control_fail_next={"count": 1, "status": 429, "retry_after": 7})
    result = await control.asend_bot(actor=operator, via="page", meeting_link=MEET_LINK)
    assert result.outcome == ControlOutcomeKind.REFUSED
    assert result.upstream_status == 429 and result.retry_after == 7
    assert result.message == "Meeting Buddy is busy: try again in 7 s."
    [audit] = await audit_rows()
    assert audit.upstream_status == 429 and audit.message == result.message
    assert_no_secret(UPSTREAM_TOKEN, result, caplog)
    again = await control.asend_bot(actor=operator, via="page", meeting_link=MEET_LINK)
    assert again.outcome == ControlOutcomeKind.DONE  # the knob was for one call only


async def test_unavailable_upstream_fails_in_plain_words(
    upstream: Any, operator: User, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.control.set_faults(control_fail_next={"count": 1, "status": 503, "retry_after": 2})
    result = await control.asend_bot(actor=operator, via="page", meeting_link=MEET_LINK)
    assert result.outcome == ControlOutcomeKind.FAILED
    assert result.upstream_status == 503 and result.retry_after == 2
    assert result.message == "Meeting Buddy is unavailable right now: try again shortly."
    [audit] = await audit_rows()
    assert audit.outcome == ControlOutcomeKind.FAILED and audit.upstream_status == 503
    assert_no_secret(UPSTREAM_TOKEN, result, caplog)


async def test_unreachable_upstream_fails_with_no_status(
    operator: User, settings: Any, caplog: Any
) -> None:
    from tests.support import free_port

    settings.MEETINGBUDDY_API_URL = f"http://127.0.0.1:{free_port()}"
    settings.MEETINGBUDDY_API_TOKEN = UPSTREAM_TOKEN
    caplog.set_level(logging.DEBUG)
    result = await control.asend_bot(actor=operator, via="page", meeting_link=MEET_LINK)
    assert result.outcome == ControlOutcomeKind.FAILED
    assert result.upstream_status is None and result.upstream_body is None
    assert result.message == "Meeting Buddy is unavailable right now: try again shortly."
    [audit] = await audit_rows()
    assert audit.upstream_status is None and audit.outcome == ControlOutcomeKind.FAILED
    assert_no_secret(UPSTREAM_TOKEN, result, caplog)


async def test_an_unexpected_failure_still_writes_the_audit_row(
    upstream: Any, operator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_store(session: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(control, "_store", broken_store)
    result = await control.asend_bot(actor=operator, via="page", meeting_link=MEET_LINK)
    assert result.outcome == ControlOutcomeKind.FAILED
    assert result.message == control.MSG_UNEXPECTED
    [audit] = await audit_rows()
    assert audit.outcome == ControlOutcomeKind.FAILED and audit.upstream_code == "UNEXPECTED"


async def test_a_user_without_the_permission_is_refused_before_the_upstream(
    upstream: Any,
) -> None:
    nobody = await User.objects.acreate(username=f"viewer-{uuid.uuid4().hex[:6]}")
    before = upstream.control.stats()["requests_total"]
    result = await control.asend_bot(actor=nobody, via="page", meeting_link=MEET_LINK)
    assert result.outcome == ControlOutcomeKind.REFUSED
    assert result.message == control.MSG_NOT_ALLOWED
    assert upstream.control.stats()["requests_total"] == before
    assert len(await audit_rows()) == 1


# --- stop --------------------------------------------------------------------------------


async def test_stop_twice_is_done_then_no_op(upstream: Any, operator: User) -> None:
    sent = await control.asend_bot(actor=operator, via="page", meeting_link=MEET_LINK)
    assert sent.session_id is not None
    first = await control.astop_bot(actor=operator, via="page", session_id=sent.session_id)
    assert first.outcome == ControlOutcomeKind.DONE
    assert first.message == "Stop requested; the bot is leaving."
    assert first.upstream_status == 200 and first.upstream_body["status"] == "completed"
    second = await control.astop_bot(actor=operator, via="admin", session_id=sent.session_id)
    assert second.outcome == ControlOutcomeKind.NO_OP and second.ok
    assert second.message == "This bot had already stopped (completed)."
    stops = [row for row in await audit_rows() if row.action == ControlKind.STOP]
    assert [row.outcome for row in stops] == [ControlOutcomeKind.DONE, ControlOutcomeKind.NO_OP]
    assert [row.via for row in stops] == ["page", "admin"]
    assert all(row.session_id == sent.session_id for row in stops)


async def test_stop_of_a_session_completed_here_is_a_no_op(upstream: Any, operator: User) -> None:
    session_id = new_session_id()
    upstream.control.create_session(session_id=session_id, manual=True)
    upstream.control.emit(session_id, status="completed")
    await MeetingSession.objects.acreate(session_id=session_id, status="completed")
    result = await control.astop_bot(actor=operator, via="page", session_id=session_id)
    assert result.outcome == ControlOutcomeKind.NO_OP
    assert result.audit.session_id == session_id


async def test_stop_of_an_unknown_session_is_refused(upstream: Any, operator: User) -> None:
    result = await control.astop_bot(actor=operator, via="api", session_id=new_session_id())
    assert result.outcome == ControlOutcomeKind.REFUSED and result.upstream_status == 404
    assert result.message == "Meeting Buddy does not know this session."
    [audit] = await audit_rows()
    assert audit.session_id is None and audit.session_ref == result.session_id


async def test_stop_of_a_malformed_id_is_refused_without_asking(
    upstream: Any, operator: User
) -> None:
    before = upstream.control.stats()["requests_total"]
    result = await control.astop_bot(actor=operator, via="api", session_id="../etc/passwd")
    assert result.outcome == ControlOutcomeKind.REFUSED and result.upstream_status is None
    assert result.message == "This is not a valid Meeting Buddy session id."
    assert upstream.control.stats()["requests_total"] == before
    assert len(await audit_rows()) == 1


async def test_rate_limited_and_unavailable_stops(
    upstream: Any, operator: User, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    session_id = new_session_id()
    upstream.control.create_session(session_id=session_id, manual=True)
    upstream.control.set_faults(control_fail_next={"count": 1, "status": 429, "retry_after": 3})
    busy = await control.astop_bot(actor=operator, via="page", session_id=session_id)
    assert busy.message == "Meeting Buddy is busy: try again in 3 s."
    assert busy.outcome == ControlOutcomeKind.REFUSED and busy.retry_after == 3
    upstream.control.set_faults(control_fail_next={"count": 1, "status": 503, "retry_after": 1})
    down = await control.astop_bot(actor=operator, via="page", session_id=session_id)
    assert down.outcome == ControlOutcomeKind.FAILED and down.upstream_status == 503
    assert down.message == "Meeting Buddy is unavailable right now: try again shortly."
    assert [row.upstream_status for row in await audit_rows()] == [429, 503]
    assert_no_secret(UPSTREAM_TOKEN, busy, caplog)
    assert_no_secret(UPSTREAM_TOKEN, down, caplog)
    done = await control.astop_bot(actor=operator, via="page", session_id=session_id)
    assert done.outcome == ControlOutcomeKind.DONE


# --- the simulator's knob and stop -------------------------------------------------------


def test_control_fail_knob_is_consumed_and_described(simulator_server_module: Any) -> None:
    import httpx

    simulator_server_module.control.set_faults(
        control_fail_next={"count": 2, "status": 429, "retry_after": 5}
    )
    described = simulator_server_module.control.faults()["global"]["control_fail_next"]
    assert described == {"count": 2, "status": 429, "retry_after": 5, "envelope": True}
    url = simulator_server_module.url("/v1/meeting-buddy/sessions")
    answers = [httpx.post(url, json={"meeting_link": MEET_LINK}) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 201]
    assert answers[0].headers["retry-after"] == "5"
    assert answers[0].json()["error"]["status"] == 429
    assert simulator_server_module.control.faults()["global"]["control_fail_next"] is None


def test_control_fail_knob_rejects_nonsense(simulator_server_module: Any) -> None:
    import httpx

    answer = httpx.post(
        simulator_server_module.url("/_control/faults"), json={"control_fail_next": {"status": 200}}
    )
    assert answer.status_code == 422
    assert "control_fail_next.status" in answer.json()["error"]["message"]


def test_simulator_stop_goes_leaving_then_completed_and_is_idempotent(
    simulator_server_module: Any,
) -> None:
    import httpx

    session_id = new_session_id()
    simulator_server_module.control.create_session(session_id=session_id, manual=True)
    simulator_server_module.control.emit(session_id, status="active")
    url = simulator_server_module.url(f"/v1/meeting-buddy/sessions/{session_id}/stop")
    first, second = httpx.post(url), httpx.post(url)
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "completed"
    assert first.json()["leave_timestamp"] == second.json()["leave_timestamp"]
    simulator_server_module.control.set_faults(session_id, send_ids=True)  # replay from the start
    replay = {"Last-Event-ID": "0"}
    with httpx.stream(
        "GET", simulator_server_module.stream_url(session_id), headers=replay
    ) as stream:
        body = stream.read().decode()
    assert body.index('"leaving"') < body.index('"completed"')
