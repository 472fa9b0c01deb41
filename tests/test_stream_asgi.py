"""Our stream through the whole ASGI application, in process: `httpx.ASGITransport`, no
server. (httpx's transport hands the body over once the app returns, so these are sessions
that ended: their stream is stored history, then `close`, then the end of the response.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone

from sessions_monitor import tokens
from sessions_monitor.models import SessionEvent
from tests.simulator_helpers import Frame, frames
from tests.support import make_session

pytestmark = pytest.mark.django_db(transaction=True)

SID = "mbsess_asgi0001"
PATH = f"/v1/meeting-buddy/sessions/{SID}/stream"
# (kind, fields) in seq order; the `stream` note is stored but not part of the stream.
HISTORY: list[tuple[str, dict[str, Any]]] = [
    ("status", {"status": "joining", "previous_status": "initializing"}),
    ("status", {"status": "active", "previous_status": "joining"}),
    ("joined", {"participant_name": "Zoë Müller"}),
    ("stream", {"note": "reconnected"}),
    ("left", {"participant_name": "Zoë Müller"}),
    ("status", {"status": "completed", "previous_status": "active"}),
    ("close", {"note": "session_ended"}),
]


def ended_session() -> None:
    started = timezone.now() - timedelta(hours=1)
    session = make_session(
        SID, status="completed", stream_state="ended", watched=False, started_at=started
    )
    for seq, (kind, fields) in enumerate(HISTORY, start=1):
        SessionEvent.objects.create(
            session=session,
            seq=seq,
            kind=kind,
            upstream_timestamp=started + timedelta(seconds=seq),
            **fields,
        )
    session.last_seq = len(HISTORY)
    session.save(update_fields=["last_seq"])


def bearer_token() -> str:
    user = User.objects.create_user("stream-reader")
    _row, plain = tokens.create_token(user=user, name="asgi test")
    return plain


@pytest.fixture
async def client(fresh_channel_layer: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The application `serve` runs, with a stored ended session and an API token."""
    from meetingdash.asgi import build_application

    await database_sync_to_async(ended_session)()
    token = await database_sync_to_async(bearer_token)()
    transport = httpx.ASGITransport(app=build_application())
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as client:
        yield client


def stream_frames(response: httpx.Response) -> list[Frame]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [frame for frame in frames(response.content) if frame.event is not None]


async def test_an_ended_session_is_streamed_whole_with_ids_then_closed(
    client: httpx.AsyncClient,
) -> None:
    received = stream_frames(await client.get(PATH))

    assert [(frame.id, frame.event) for frame in received] == [
        ("1", "status"),
        ("2", "status"),
        ("3", "status"),
        ("5", "status"),
        ("6", "status"),
        ("7", "close"),
    ]
    active, joined, left, completed, close = (frame.json() for frame in received[1:])
    assert active["session_id"] == SID
    assert (active["status"], active["previous_status"]) == ("active", "joining")
    assert (joined["event"], joined["participant_name"]) == ("joined", "Zoë Müller")
    assert (left["event"], left["participant_name"]) == ("left", "Zoë Müller")
    assert (completed["status"], completed["error_code"]) == ("completed", None)
    assert close == {"reason": "session_ended"}


async def test_last_event_id_resumes_after_the_given_id(client: httpx.AsyncClient) -> None:
    received = stream_frames(await client.get(PATH, headers={"Last-Event-ID": "3"}))

    assert [frame.id for frame in received] == ["5", "6", "7"]
    assert received[-1].event == "close"


async def test_a_last_event_id_we_never_issued_starts_afresh(client: httpx.AsyncClient) -> None:
    received = stream_frames(await client.get(PATH, headers={"Last-Event-ID": "999"}))

    assert [frame.id for frame in received] == ["1", "2", "3", "5", "6", "7"]


async def test_without_credentials_the_answer_is_a_401_envelope(
    client: httpx.AsyncClient,
) -> None:
    del client.headers["Authorization"]
    response = await client.get(PATH)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert (error["code"], error["status"]) == ("UNAUTHORIZED", 401)
