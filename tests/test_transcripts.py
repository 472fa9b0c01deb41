"""Transcripts end to end in process: the client's parsing, storage, the relay's poller
against the real simulator, and the detail page's live appends."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.template.loader import render_to_string

from sessions_monitor import consumers, transcripts
from sessions_monitor.hub import Hub
from sessions_monitor.models import MeetingSession, SessionEvent, TranscriptSegment
from sessions_monitor.relay import transcripts as poller
from sessions_monitor.relay.worker import Relay
from sessions_monitor.upstream import MeetingBuddyClient, UpstreamUnavailable
from sessions_monitor.upstream.models import UpstreamTranscriptSegment
from tests.conftest import SimulatorServer, _simulator_server
from tests.support import eventually, fast_relay, free_port, make_session
from tests.test_consumers import (
    broadcast,
    caught_up,
    close_sockets,  # noqa: F401 (autouse: no socket left open)
    connect,
    frames_until,
    store,
)

pytestmark = pytest.mark.django_db(transaction=True)

SPEED = 20.0


def sid() -> str:
    return f"mbsess_trn{uuid.uuid4().hex[:10]}"


def segment(n: int, **fields: Any) -> UpstreamTranscriptSegment:
    defaults: dict[str, Any] = {
        "transcript_id": f"mbtrans_{n}",
        "text": f"words {n}",
        "start_time": n * 4.0,
        "end_time": n * 4.0 + 3,
        "speaker": "Alice",
    }
    return UpstreamTranscriptSegment(**{**defaults, **fields})


# --- the client ------------------------------------------------------------------------------


def mock_client(body: bytes, status: int = 200) -> MeetingBuddyClient:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/meeting-buddy/sessions/mbsess_abc/transcripts"
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    return MeetingBuddyClient(
        "http://upstream.test",
        "secret-token",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
        rng=random.Random(1),
    )


async def test_the_client_parses_segments_and_skips_a_malformed_one() -> None:
    body = json.dumps(
        [
            {
                "transcript_id": "mbtrans_1",
                "text": "Hello",
                "confidence": 0.9,
                "start_time": 1.5,
                "end_time": 3,
                "speaker": "spk_0",
                "speaker_display_name": "Zoë Müller",
                "language_code": "de",
                "created_at": "2026-01-01T10:00:00Z",
                "new_field": 1,
            },
            {"text": "no id"},
            "not an object",
            {"transcript_id": "mbtrans_2", "start_time": "soon"},
            {"transcript_id": "mbtrans_3", "start_time": 5, "speaker": None, "confidence": None},
        ]
    ).encode()
    client = mock_client(body)
    segments = await client.transcripts("mbsess_abc")
    await client.http.aclose()

    assert [s.transcript_id for s in segments] == ["mbtrans_1", "mbtrans_3"]
    first, third = segments
    assert (first.text, first.start_time, first.end_time) == ("Hello", 1.5, 3.0)
    assert (first.speaker, first.confidence, first.language_code) == ("Zoë Müller", 0.9, "de")
    assert first.created_at is not None and first.created_at.year == 2026
    assert first.extra == {"speaker_display_name": "Zoë Müller", "new_field": 1}
    assert (third.speaker, third.confidence, third.end_time) == ("", None, 5.0)
    assert client.skipped_segments == 3


@pytest.mark.parametrize("body", [b'{"segments": []}', b"not json"])
async def test_a_transcript_answer_that_is_not_an_array_is_an_upstream_error(body: bytes) -> None:
    client = mock_client(body)
    with pytest.raises(Exception) as raised:
        await client.transcripts("mbsess_abc")
    await client.http.aclose()
    assert type(raised.value).__name__ == "MalformedResponse"
    assert "secret-token" not in str(raised.value)


# --- storage -------------------------------------------------------------------------------


def test_store_segments_stores_each_segment_once(db: Any) -> None:
    make_session("mbsess_store")
    first = transcripts.store_segments("mbsess_store", [segment(2), segment(1)])
    again = transcripts.store_segments("mbsess_store", [segment(1), segment(2), segment(3)])

    assert [row.transcript_id for row in first] == ["mbtrans_1", "mbtrans_2"]
    assert [row.transcript_id for row in again] == ["mbtrans_3"]
    assert transcripts.store_segments("mbsess_store", [segment(3)]) == []
    stored = transcripts.read_transcript("mbsess_store")
    assert [(r.transcript_id, r.speaker) for r in stored] == [
        ("mbtrans_1", "Alice"),
        ("mbtrans_2", "Alice"),
        ("mbtrans_3", "Alice"),
    ]


def test_store_segments_fits_outside_text_and_skips_unknown_sessions(db: Any) -> None:
    make_session("mbsess_fit")
    long_id = segment(1, transcript_id="mbtrans_" + "x" * 200)
    odd = segment(2, speaker="A\x00" + "n" * 400, language_code="de-" + "x" * 40)
    stored = transcripts.store_segments("mbsess_fit", [long_id, odd])
    assert [row.transcript_id for row in stored] == ["mbtrans_2"]
    row = TranscriptSegment.objects.get(session_id="mbsess_fit")
    assert "\x00" not in row.speaker and len(row.speaker) <= 300
    assert len(row.language_code) <= 20
    assert transcripts.store_segments("mbsess_nobody", [segment(1)]) == []


def test_detail_context_says_when_transcription_is_off(db: Any) -> None:
    make_session("mbsess_off", raw={"transcription_enabled": False})
    make_session("mbsess_on", raw={})
    assert transcripts.detail_context("mbsess_off")["transcription_enabled"] is False
    assert transcripts.detail_context("mbsess_on")["transcription_enabled"] is True
    off = render_to_string(
        "sessions_monitor/transcript.html#transcript", transcripts.detail_context("mbsess_off")
    )
    assert "Transcript is off for this bot" in off


def test_first_render_and_updates_use_the_same_segment_markup(db: Any) -> None:
    make_session("mbsess_markup")
    rows = transcripts.store_segments("mbsess_markup", [segment(16, speaker="Zoë <b>")])
    page = render_to_string(
        "sessions_monitor/transcript.html#transcript", transcripts.detail_context("mbsess_markup")
    )
    update = consumers.render_segments([transcripts.plain_segment(rows[0])])
    item = '<li class="segment" id="segment-mbtrans_16"><span class="segment-time muted">01:04'
    assert item in page and item in update
    assert "Zoë &lt;b&gt;:" in page and "<b>" not in update
    assert 'hx-swap-oob="beforeend:#transcript-list"' in update


# --- the relay's poller against the real simulator -------------------------------------------


@pytest.fixture
def fast_simulator() -> Iterator[SimulatorServer]:
    yield from _simulator_server("--speed", str(SPEED))


@pytest.fixture
async def relay(fast_simulator, fresh_channel_layer, settings) -> AsyncIterator[Relay]:
    settings.MEETINGDASH_TRANSCRIPT_POLL_SECONDS = 0.2
    relay = fast_relay(fast_simulator.base_url, stall_seconds=2.0)
    await relay.start()
    yield relay
    await relay.stop()


def live_session(sim: SimulatorServer, *people: str, **transcription: Any) -> str:
    session_id = sid()
    sim.control.create_session(session_id=session_id, manual=True, transcription=transcription)
    sim.control.emit(session_id, status="active")
    for name in people:
        sim.control.emit(session_id, join=name)
    return session_id


@database_sync_to_async
def stored_ids(session_id: str) -> list[str]:
    return [row.transcript_id for row in transcripts.read_transcript(session_id)]


def upstream_ids(sim: SimulatorServer, session_id: str) -> list[str]:
    url = sim.url(f"/v1/meeting-buddy/sessions/{session_id}/transcripts")
    return [s["transcript_id"] for s in httpx.get(url, timeout=10).json()]


async def test_the_relay_stores_and_broadcasts_a_live_sessions_transcript(
    relay: Relay, fast_simulator: SimulatorServer
) -> None:
    session_id = live_session(fast_simulator, "Alice Johnson")
    hub = Hub()
    subscription = await hub.subscribe(session_id)
    assert await relay.watch(session_id)
    await eventually(lambda: _at_least(stored_ids(session_id), 3), what="stored segments")
    assert relay.transcripts.polling() == [session_id]

    fast_simulator.control.emit(session_id, status="completed")
    await eventually(lambda: not relay.is_following(session_id), what="the follow to end")
    assert relay.transcripts.polling() == []
    # The last poll after the end: the stored transcript is the upstream's, whole.
    assert await stored_ids(session_id) == upstream_ids(fast_simulator, session_id)

    broadcast: list[str] = []
    while (message := subscription.get_nowait()) is not None:
        if message.kind == "transcript":
            broadcast += [s["transcript_id"] for s in message.data["segments"]]
    assert broadcast == await stored_ids(session_id)  # each new segment once, in order
    subscription.close()
    await hub.close()


async def _at_least(ids: Any, count: int) -> bool:
    return len(await ids) >= count


async def test_no_segments_are_stored_with_transcription_off(
    relay: Relay, fast_simulator: SimulatorServer
) -> None:
    off = live_session(fast_simulator, "Alice Johnson", transcription_enabled=False)
    on = live_session(fast_simulator, "Alice Johnson")
    assert await relay.watch(off) and await relay.watch(on)
    await eventually(lambda: _at_least(stored_ids(on), 3), what="the other session's segments")
    stats = await asyncio.to_thread(fast_simulator.control.stats)
    assert stats["transcript_requests"][off] >= 2  # polled all along, nothing to store
    assert await stored_ids(off) == []


async def test_failing_polls_never_stop_the_status_stream(
    relay: Relay, fast_simulator: SimulatorServer, caplog: Any
) -> None:
    """Polls go to a port nobody listens on (a real connection refused) while the status
    stream goes on; once the upstream answers again, the next interval stores the segments."""
    dead = MeetingBuddyClient(f"http://127.0.0.1:{free_port()}")
    real = relay.transcripts.make_client
    relay.transcripts.make_client = lambda: dead
    session_id = live_session(fast_simulator, "Alice Johnson")
    assert await relay.watch(session_id)

    for name in ("Bob", "Carol"):
        await eventually(
            lambda: asyncio.to_thread(
                lambda: fast_simulator.control.stats()["open_streams"].get(session_id) == 1
            )
        )
        await asyncio.to_thread(fast_simulator.control.emit, session_id, join=name)
        await eventually(functools.partial(_joined, session_id, name), what=f"{name}'s join")
    assert "transcript poll of" in caplog.text and "failed" in caplog.text
    assert await stored_ids(session_id) == []
    assert relay.is_following(session_id)

    with pytest.raises(UpstreamUnavailable):
        await dead.transcripts(session_id)  # still down: the polls really failed
    relay.transcripts.make_client = real  # the loop asks for its client at every poll
    await eventually(lambda: _at_least(stored_ids(session_id), 2), what="segments after recovery")
    await dead.aclose()


@database_sync_to_async
def _joined(session_id: str, name: str) -> bool:
    return SessionEvent.objects.filter(
        session_id=session_id, kind="joined", participant_name=name
    ).exists()


async def test_poll_once_is_a_step_the_loop_repeats(fast_simulator: SimulatorServer) -> None:
    session_id = live_session(fast_simulator, "Alice Johnson")
    await database_sync_to_async(make_session)(session_id)
    client = MeetingBuddyClient(fast_simulator.base_url)
    await eventually(lambda: len(upstream_ids(fast_simulator, session_id)) >= 2)
    first = await poller.poll_once(client, session_id)
    assert [row.transcript_id for row in first] == upstream_ids(fast_simulator, session_id)[
        : len(first)
    ]
    again = await poller.poll_once(client, session_id)
    assert {row.transcript_id for row in again}.isdisjoint(r.transcript_id for r in first)
    await client.aclose()


# --- the detail page ---------------------------------------------------------------------------


@pytest.fixture
def user(db: Any) -> User:
    return User.objects.create_user("reader", password="pw-reader-123")


async def frames_with(communicator: Any, text: str) -> str:
    while True:
        frame = await communicator.receive_from(timeout=5)
        if text in frame:
            return frame


async def test_the_page_gets_new_segments_rendered_once_for_all_viewers(
    fresh_channel_layer: Any, user: User, monkeypatch: Any
) -> None:
    await database_sync_to_async(make_session)("mbsess_pageview")
    await database_sync_to_async(_one_event)("mbsess_pageview")
    viewers = [await caught_up("mbsess_pageview", user) for _ in range(3)]
    # An event through the live path: each page's hello has been answered in full.
    two = await database_sync_to_async(store)("mbsess_pageview", 2)
    await broadcast(fresh_channel_layer, "mbsess_pageview", two)
    for viewer in viewers:
        await frames_until(viewer, 2)
    calls: list[str] = []
    real = render_to_string

    def counting(name: str, context: Any = None) -> str:
        calls.append(name)
        return real(name, context)

    monkeypatch.setattr(consumers, "render_to_string", counting)
    rows = await transcripts.astore_segments("mbsess_pageview", [segment(1), segment(2)])
    assert await transcripts.abroadcast_segments("mbsess_pageview", rows)

    received = [await frames_with(viewer, "segment-mbtrans_2") for viewer in viewers]
    assert len(set(received)) == 1
    assert "segment-mbtrans_1" in received[0]
    assert calls.count("sessions_monitor/transcript.html#new-segments") == 1


async def test_a_segment_the_hello_already_sent_is_not_appended_again(
    fresh_channel_layer: Any, user: User
) -> None:
    await database_sync_to_async(make_session)("mbsess_seamt")
    await database_sync_to_async(_one_event)("mbsess_seamt")
    communicator = await connect("/ws/sessions/mbsess_seamt/", user)
    early = await transcripts.astore_segments("mbsess_seamt", [segment(1)])
    await transcripts.abroadcast_segments("mbsess_seamt", early)  # before the hello
    await communicator.send_to(text_data=json.dumps({"after": 0}))
    section = await frames_with(communicator, 'id="transcript"')
    assert "segment-mbtrans_1" in section
    later = await transcripts.astore_segments("mbsess_seamt", [segment(1), segment(2)])
    await transcripts.abroadcast_segments("mbsess_seamt", later)
    frame = await frames_with(communicator, "segment-mbtrans_")
    assert "segment-mbtrans_2" in frame and "segment-mbtrans_1" not in frame


async def test_a_resync_re_sends_the_whole_transcript(fresh_channel_layer: Any, user: User) -> None:
    await database_sync_to_async(make_session)("mbsess_rst")
    await database_sync_to_async(_one_event)("mbsess_rst")
    await transcripts.astore_segments("mbsess_rst", [segment(1)])
    communicator = await caught_up("mbsess_rst", user)
    await frames_with(communicator, 'id="transcript"')
    await transcripts.astore_segments("mbsess_rst", [segment(2)])  # its broadcast lost
    from sessions_monitor.hub import get_hub
    from sessions_monitor.messages import HubMessage

    subscription = next(iter(get_hub()._feeds["mbsess_rst"].subscribers))
    subscription._deliver(HubMessage("resync", "mbsess_rst", {"reason": "test"}))
    section = await frames_with(communicator, 'id="transcript"')
    assert 'hx-swap-oob="true"' in section and "segment-mbtrans_2" in section


def _one_event(session_id: str) -> None:
    store(session_id, 1)
    MeetingSession.objects.filter(pk=session_id).update(raw={"transcription_enabled": True})
