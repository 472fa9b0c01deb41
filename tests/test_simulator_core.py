"""The simulator's state and clock, in process: subscribers, scripts, speed, arrivals, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from sessions_monitor.simulator import Simulator
from sessions_monitor.simulator.core import Subscription
from sessions_monitor.simulator.faults import FAULT_FIELDS, Faults, FaultState
from sessions_monitor.simulator.model import SessionConflict, StreamEvent
from sessions_monitor.simulator.scenarios import Step
from tests.support import eventually

SESSION_FIELDS = {
    "session_id", "organization_id", "user_id", "meeting_link", "platform", "bot_name",
    "status", "transcription_enabled", "transcription_language", "debug_mode", "created_at",
    "updated_at", "join_timestamp", "leave_timestamp", "total_duration_seconds",
    "segment_count", "audio_file_count", "video_file_count", "total_size_bytes",
    "output_directory", "error_message", "error_code", "metadata", "current_participants",
    "participant_history", "audio_status", "transcription_status", "recording_status",
    "bot_id", "external_meeting_id", "transcription_source", "speaker_labels",
    "voice_agent_enabled", "voice_profile_id", "visibility", "shared_department_ids",
    "has_recording", "is_post_fixed",
}  # fmt: skip


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(seed=1, initial_sessions=0, arrivals=False, speed=1.0)
    await simulator.start()
    yield simulator
    await simulator.stop()


async def next_event(subscription: Subscription, seconds: float = 5.0) -> StreamEvent:
    async with asyncio.timeout(seconds):
        event = await subscription.queue.get()
    assert event is not None
    return event


async def test_new_subscriber_gets_current_status_then_live_events(sim: Simulator) -> None:
    sim.create_session(session_id="mbsess_a", manual=True)
    sim.apply_step("mbsess_a", Step(status="joining"))
    first, second = sim.subscribe("mbsess_a"), sim.subscribe("mbsess_a")
    for subscription in (first, second):
        [snapshot] = subscription.initial
        assert snapshot.name == "status"
        assert snapshot.data["status"] == snapshot.data["previous_status"] == "joining"
    sim.apply_step("mbsess_a", Step(join="Zoë Müller"))
    for subscription in (first, second):
        event = await next_event(subscription)
        assert event.data == {
            "session_id": "mbsess_a",
            "participant_name": "Zoë Müller",
            "event": "joined",
            "timestamp": event.data["timestamp"],
        }


async def test_terminal_status_is_followed_by_close_and_releases_subscribers(
    sim: Simulator,
) -> None:
    sim.create_session(session_id="mbsess_b", manual=True)
    subscription = sim.subscribe("mbsess_b")
    sim.apply_step(
        "mbsess_b", Step(status="failed", error_code="REMOVED_BY_HOST", error_message="m")
    )
    failed = await next_event(subscription)
    assert (failed.data["status"], failed.data["error_code"], failed.data["error_message"]) == (
        "failed",
        "REMOVED_BY_HOST",
        "m",
    )
    close = await next_event(subscription)
    assert (close.name, close.data) == ("close", {"reason": "session_ended"})
    assert sim._subscribers == {}
    with pytest.raises(SessionConflict):
        sim.apply_step("mbsess_b", Step(status="active"))


async def test_subscribing_to_an_ended_session_gives_final_status_and_close(
    sim: Simulator,
) -> None:
    sim.create_session(session_id="mbsess_c", manual=True)
    sim.apply_step("mbsess_c", Step(status="failed", error_code="X", error_message="y"))
    subscription = sim.subscribe("mbsess_c")
    assert not subscription.live
    assert [e.name for e in subscription.initial] == ["status", "close"]
    assert subscription.initial[0].data["error_code"] == "X"


async def test_stop_is_leaving_then_completed_and_idempotent(sim: Simulator) -> None:
    sim.create_session(session_id="mbsess_d", manual=True)
    for step in (Step(status="joining"), Step(status="active"), Step(join="Alice")):
        sim.apply_step("mbsess_d", step)
    subscription = sim.subscribe("mbsess_d")
    session = sim.stop_session("mbsess_d")
    assert session.status == "completed"
    assert [(await next_event(subscription)).data.get("status") for _ in range(2)] == [
        "leaving",
        "completed",
    ]
    assert (await next_event(subscription)).name == "close"
    body = session.to_json(sim.now())
    assert body["leave_timestamp"] is not None
    assert body["total_duration_seconds"] is not None
    assert body["current_participants"] == {"count": 0, "names": []}
    seq = session.last_seq
    assert sim.stop_session("mbsess_d").status == "completed"
    assert session.last_seq == seq, "a second stop emits nothing"


async def test_stopping_a_failed_session_keeps_it_failed(sim: Simulator) -> None:
    sim.create_session(session_id="mbsess_e", manual=True)
    sim.apply_step("mbsess_e", Step(status="failed", error_code="X", error_message="y"))
    assert sim.stop_session("mbsess_e").status == "failed"


async def test_scripts_run_on_the_clock_scaled_by_speed() -> None:
    """600 scenario seconds at speed 3000 take 0.2 s: on the clock (not at once), and scaled
    (unscaled, the first step alone would outlast the 60 s wait by far)."""
    sim = Simulator(seed=1, initial_sessions=0, arrivals=False, speed=3000.0)
    await sim.start()
    try:
        sim.create_session(
            session_id="mbsess_f",
            script=[Step(after=300.0, status="joining"), Step(after=300.0, status="completed")],
        )
        subscription = sim.subscribe("mbsess_f")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await next_event(subscription, 60)).data["status"] == "joining"
        assert (await next_event(subscription, 60)).data["status"] == "completed"
        assert loop.time() - started >= 0.15
    finally:
        await sim.stop()


async def test_step_timestamps_can_be_pinned(sim: Simulator) -> None:
    sim.create_session(session_id="mbsess_g", manual=True)
    pinned = datetime(2025, 12, 11, 10, 0, 5, tzinfo=UTC)
    [event] = sim.apply_step("mbsess_g", Step(status="joining", timestamp=pinned))
    assert event.data["timestamp"] == "2025-12-11T10:00:05Z"
    assert sim.subscribe("mbsess_g").initial[0].data["timestamp"] == "2025-12-11T10:00:05Z"


async def test_same_seed_same_sessions() -> None:
    def fingerprint(sim: Simulator) -> list[tuple[str, str, str, str, str]]:
        return sorted(
            (s.session_id, s.platform, s.meeting_link, s.bot_name, s.kind) for s in sim.sessions()
        )

    sims = [Simulator(seed=7, initial_sessions=6, arrivals=False) for _ in range(3)]
    sims[2] = Simulator(seed=8, initial_sessions=6, arrivals=False)
    for sim in sims:
        await sim.start()
    try:
        assert fingerprint(sims[0]) == fingerprint(sims[1])
        assert fingerprint(sims[0]) != fingerprint(sims[2])
        for session in sims[0].sessions():
            assert sims[0].script_of(session.session_id) == sims[1].script_of(session.session_id)
    finally:
        for sim in sims:
            await sim.stop()


async def test_initial_sessions_are_in_different_states() -> None:
    sim = Simulator(seed=3, initial_sessions=12, arrivals=False)
    await sim.start()
    try:
        states = {s.status for s in sim.sessions()}
        assert len(states) >= 3, states
        assert len(sim.sessions()) == 12
        assert all(s.created_at <= sim.now() for s in sim.sessions())
    finally:
        await sim.stop()


async def test_new_sessions_keep_arriving_but_stay_bounded() -> None:
    sim = Simulator(seed=2, initial_sessions=0, arrivals=True, speed=400.0)
    await sim.start()
    try:

        def twelve_with_never_too_many_live() -> bool:
            live = [s for s in sim.sessions() if not s.is_terminal]
            assert len(live) <= sim.max_live
            return len(sim.sessions()) >= 12

        await eventually(twelve_with_never_too_many_live, what="12 sessions")
        assert any(s.is_terminal for s in sim.sessions())
    finally:
        await sim.stop()


async def test_old_ended_sessions_are_forgotten_beyond_the_cap() -> None:
    sim = Simulator(seed=2, initial_sessions=0, arrivals=False, max_sessions=5)
    await sim.start()
    try:
        live = sim.create_session(session_id="mbsess_live", manual=True)
        for index in range(10):
            sim.create_session(session_id=f"mbsess_old{index}", script=[Step(status="completed")])
        assert len(sim.sessions()) == 5
        assert sim.get(live.session_id) is not None, "running sessions are never forgotten"
        assert sim.get("mbsess_old9") is not None, "the newest ended ones stay"
    finally:
        await sim.stop()


async def test_duplicate_or_malformed_ids_are_refused(sim: Simulator) -> None:
    sim.create_session(session_id="mbsess_dup", manual=True)
    with pytest.raises(SessionConflict):
        sim.create_session(session_id="mbsess_dup", manual=True)
    with pytest.raises(ValueError):
        sim.create_session(session_id="sess_1", manual=True)


async def test_stop_ends_open_subscriptions() -> None:
    sim = Simulator(seed=1, initial_sessions=0, arrivals=False)
    await sim.start()
    sim.create_session(session_id="mbsess_h", manual=True)
    subscription = sim.subscribe("mbsess_h")
    await sim.stop()
    assert subscription.queue.get_nowait() is None


async def test_last_event_id_replays_missed_events_when_ids_are_on(sim: Simulator) -> None:
    sim.create_session(session_id="mbsess_i", manual=True)
    sim.faults.set("mbsess_i", send_ids=True)
    sim.apply_step("mbsess_i", Step(status="joining"))
    seen = sim.subscribe("mbsess_i").initial[0].seq
    sim.apply_step("mbsess_i", Step(status="active"))
    sim.apply_step("mbsess_i", Step(join="Alice"))
    replay = sim.subscribe("mbsess_i", last_event_id=seen).initial
    assert [e.data.get("status", e.data.get("event")) for e in replay] == ["active", "joined"]
    sim.faults.reset("mbsess_i")
    assert len(sim.subscribe("mbsess_i", last_event_id=seen).initial) == 1, "snapshot"


def test_session_object_has_every_documented_field() -> None:
    sim = Simulator(seed=1, initial_sessions=0, arrivals=False)
    session = sim.create_session(
        session_id="mbsess_j", meeting_link="https://meet.google.com/abc-defg-hij", manual=True
    )
    body = session.to_json(sim.now())
    assert set(body) == SESSION_FIELDS
    assert (body["status"], body["platform"]) == ("initializing", "google_meet")
    assert body["join_timestamp"] is None and body["has_recording"] is False
    assert session.to_active_json(sim.now())["platform"] == "meet"


def test_fault_knobs_validate_and_scope() -> None:
    faults = Faults()
    with pytest.raises(ValueError):
        faults.set(colour="red")
    with pytest.raises(ValueError):
        faults.set(line_ending="crcr")
    with pytest.raises(ValueError):
        faults.set(fail_next={"count": 1, "status": 200})
    faults.set(chunk_size=4)
    faults.set("mbsess_x", send_ids=True)
    assert faults.for_session("mbsess_y").chunk_size == 4
    assert faults.for_session("mbsess_x").chunk_size is None, "a session's own state replaces"
    faults.reset("mbsess_x")
    assert faults.for_session("mbsess_x").chunk_size == 4
    faults.reset()
    assert faults.for_session("mbsess_x") == FaultState()


def test_every_knob_is_settable_and_a_bad_one_applies_nothing() -> None:
    state = FaultState()
    knobs = {
        "drop_after_events": 3,
        "drop_times": 2,
        "stall": {"seconds": 5, "keepalives": False},
        "fail_next": {"count": 1},
        "malformed_next": 1,
        "unknown_event_next": 2,
        "chunk_size": 4,
        "chunk_delay": 0.5,
        "line_ending": "crlf",
        "send_ids": True,
        "wrong_content_type_next": 1,
        "retry_ms": 100,
        "ended_as_404": True,
        "control_fail_next": {"count": 1},
    }
    assert set(knobs) == set(FAULT_FIELDS)
    with pytest.raises(ValueError, match="chunk_delay"):
        state.update({**knobs, "chunk_delay": -1})
    assert state == FaultState(), "nothing applied from a rejected update"
    state.update(knobs)
    assert (state.drop_after_events, state.chunk_size, state.line_ending) == (3, 4, "crlf")
    assert state.stall_remaining() > 0 and state.stall_keepalives is False
    state.update({"stall": None})
    assert state.stall_remaining() == 0


def test_drop_times_limits_how_many_connections_are_dropped() -> None:
    state = FaultState()
    state.update({"drop_after_events": 2, "drop_times": 1})
    assert not state.should_drop(1)
    assert state.should_drop(2)
    assert not state.should_drop(2), "only the next connection was to be dropped"
    state.update({"drop_after_events": 1})
    assert state.should_drop(1) and state.should_drop(5), "no drop_times = every connection"


def test_counters_are_consumed() -> None:
    state = FaultState()
    state.update({"malformed_next": 2, "fail_next": {"count": 1, "status": 503, "retry_after": 2}})
    assert [state.take_malformed() for _ in range(3)] == [True, True, False]
    failure = state.take_fail()
    assert failure is not None and failure.retry_after == 2
    assert state.take_fail() is None


def test_from_environment(monkeypatch: pytest.MonkeyPatch, settings: object) -> None:
    monkeypatch.setenv("MEETINGDASH_SIMULATOR_SEED", "9")
    monkeypatch.setenv("MEETINGDASH_SIMULATOR_SPEED", "2.5")
    monkeypatch.setenv("MEETINGDASH_SIMULATOR_SESSIONS", "3")
    settings.DEBUG = False  # type: ignore[attr-defined]
    monkeypatch.delenv("MEETINGDASH_SIMULATOR_CONTROL", raising=False)
    sim = Simulator.from_environment()
    assert (sim.seed, sim.speed, sim.initial_sessions, sim.control) == (9, 2.5, 3, False)
    assert sim.name == "simulator"
    monkeypatch.setenv("MEETINGDASH_SIMULATOR_CONTROL", "1")
    assert Simulator.from_environment().control is True
    settings.DEBUG = True  # type: ignore[attr-defined]
    monkeypatch.delenv("MEETINGDASH_SIMULATOR_CONTROL")
    assert Simulator.from_environment().control is True
