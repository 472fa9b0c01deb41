"""The simulator's transcripts (upstream-api.md §5.5): a real `simulate_upstream` over HTTP,
and the pure segment generator in process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sessions_monitor.simulator.model import SimSession
from sessions_monitor.simulator.scenarios import Step
from sessions_monitor.simulator.transcripts import SLOT_SECONDS, TranscriptTrack
from tests.conftest import SimulatorServer, _simulator_server
from tests.simulator_helpers import new_session_id

SPEED = 20.0  # a slot every 0.2 s of wall time
SEGMENT_FIELDS = {
    "transcript_id",
    "text",
    "confidence",
    "start_time",
    "end_time",
    "speaker",
    "language_code",
    "created_at",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    yield from _simulator_server("--speed", str(SPEED))


def transcripts(sim: SimulatorServer, session_id: str) -> httpx.Response:
    url = sim.url(f"/v1/meeting-buddy/sessions/{session_id}/transcripts")
    return httpx.get(url, headers=sim.headers, timeout=10)


def wait_segments(sim: SimulatorServer, session_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        response = transcripts(sim, session_id)
        assert response.status_code == 200, response.text
        if len(response.json()) >= count:
            return list(response.json())
        assert time.monotonic() < deadline, f"fewer than {count} segments: {response.json()}"
        time.sleep(0.05)


def in_meeting(sim: SimulatorServer, *people: str, **transcription: Any) -> str:
    session_id = new_session_id()
    sim.control.create_session(session_id=session_id, manual=True, transcription=transcription)
    sim.control.emit(session_id, status="active")
    for name in people:
        sim.control.emit(session_id, join=name)
    return session_id


def test_a_live_session_with_transcription_on_grows_a_transcript(sim: SimulatorServer) -> None:
    session_id = in_meeting(sim, "Alice Johnson", "Zoë Müller", transcription_language="de")
    segments = wait_segments(sim, session_id, 4)

    assert all(set(segment) == SEGMENT_FIELDS for segment in segments)
    assert all(s["transcript_id"].startswith("mbtrans_") for s in segments)
    assert len({s["transcript_id"] for s in segments}) == len(segments)
    assert {s["speaker"] for s in segments} <= {"Alice Johnson", "Zoë Müller"}
    assert {s["language_code"] for s in segments} == {"de"}
    starts = [s["start_time"] for s in segments]
    assert starts == sorted(starts)
    assert all(0 <= s["start_time"] < s["end_time"] for s in segments)
    assert all(0.0 <= s["confidence"] <= 1.0 and s["text"] for s in segments)
    assert all(datetime.fromisoformat(s["created_at"]).tzinfo is not None for s in segments)
    # The same segments on every read: polls only ever see the list grow.
    later = wait_segments(sim, session_id, len(segments) + 1)
    assert later[: len(segments)] == segments


def test_no_transcript_with_transcription_off_or_before_the_meeting(sim: SimulatorServer) -> None:
    off = in_meeting(sim, "Alice Johnson", transcription_enabled=False)
    waiting = new_session_id()
    sim.control.create_session(session_id=waiting, manual=True)
    sim.control.emit(waiting, status="joining")
    sim.control.emit(waiting, join="Bob")
    on = in_meeting(sim, "Alice Johnson")

    wait_segments(sim, on, 3)  # slots ended for all three sessions meanwhile

    assert transcripts(sim, off).json() == []
    assert transcripts(sim, waiting).json() == []
    session = httpx.get(sim.url(f"/v1/meeting-buddy/sessions/{off}"), timeout=10).json()
    assert session["transcription_enabled"] is False


def test_the_transcript_is_kept_after_the_session_ended(sim: SimulatorServer) -> None:
    session_id = in_meeting(sim, "Alice Johnson")
    wait_segments(sim, session_id, 2)
    sim.control.emit(session_id, status="completed")
    final = transcripts(sim, session_id).json()
    assert len(final) >= 2
    assert transcripts(sim, session_id).json() == final


def test_unknown_and_malformed_ids_answer_like_the_other_routes(sim: SimulatorServer) -> None:
    unknown = transcripts(sim, "mbsess_doesnotexist")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "SESSION_NOT_FOUND"
    assert transcripts(sim, "not-a-session").status_code == 422


def test_stats_count_transcript_requests_per_session(sim: SimulatorServer) -> None:
    session_id = in_meeting(sim)
    for _ in range(3):
        transcripts(sim, session_id)
    assert sim.control.stats()["transcript_requests"][session_id] == 3


def _session(**fields: Any) -> SimSession:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return SimSession(
        session_id="mbsess_track1",
        meeting_link="https://zoom.us/j/1",
        platform="zoom",
        bot_name="Bot",
        created_at=created,
        transcript=TranscriptTrack(speed=1.0),
        **fields,
    )


def test_a_slot_speaks_only_in_the_meeting_with_someone_present() -> None:
    session = _session()
    start = session.created_at
    session.apply(Step(status="active"), start)
    at = start + timedelta(seconds=SLOT_SECONDS * 2)  # two slots, nobody there
    session.apply(Step(join="Alice"), at)
    at += timedelta(seconds=SLOT_SECONDS * 3)  # three slots with Alice
    session.apply(Step(status="waiting"), at)
    at += timedelta(seconds=SLOT_SECONDS * 4)  # four slots in the lobby
    session.apply(Step(status="active"), at)
    at += timedelta(seconds=SLOT_SECONDS)  # one more in the meeting
    session.apply(Step(status="completed"), at)
    session.transcript.advance(session, at + timedelta(hours=1))  # ended: no more

    slots = [int(s["transcript_id"].rsplit("_", 1)[1]) for s in session.transcript.segments]
    assert slots == [2, 3, 4, 9]
    assert {s["speaker"] for s in session.transcript.segments} == {"Alice"}
    assert all(slot * SLOT_SECONDS <= s["start_time"] < (slot + 1) * SLOT_SECONDS
               for slot, s in zip(slots, session.transcript.segments, strict=True))  # fmt: skip


def test_the_same_session_says_the_same_thing() -> None:
    def run() -> list[dict[str, Any]]:
        session = _session()
        session.apply(Step(status="active"), session.created_at)
        session.apply(Step(join="Alice"), session.created_at)
        session.apply(Step(join="Bob"), session.created_at)
        session.transcript.advance(session, session.created_at + timedelta(minutes=2))
        return session.transcript.segments

    first = run()
    assert len(first) == int(120 // SLOT_SECONDS)
    assert run() == first
    assert len({s["text"] for s in first}) > 5
