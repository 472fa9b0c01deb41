"""The simulated status stream over a real socket: Part A's example, keepalives, fault knobs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SimulatorServer
from tests.simulator_helpers import RawStream, events, new_session_id
from tests.support import wait_until

# upstream-api.md Part A, the provider's example response, byte for byte.
PART_A_EXAMPLE = """\
event: status
data: {"session_id":"mbsess_abc123def456","status":"joining","previous_status":"joining","timestamp":"2025-12-11T10:00:05Z","error_message":null,"error_code":null}

: keepalive

event: status
data: {"session_id":"mbsess_abc123def456","status":"active","previous_status":"active","timestamp":"2025-12-11T10:00:30Z","error_message":null,"error_code":null}

event: status
data: {"session_id":"mbsess_abc123def456","participant_name":"Alice","event":"joined","timestamp":"2025-12-11T10:01:00Z"}

event: status
data: {"session_id":"mbsess_abc123def456","status":"completed","previous_status":"completed","timestamp":"2025-12-11T10:30:00Z","error_message":null,"error_code":null}

event: close
data: {"reason":"session_ended"}
"""
SPEC = Path("/work/shared/upstream-api.md")
KEEPALIVE = b": keepalive\n\n"


@pytest.fixture
def sim(simulator_server_module: SimulatorServer) -> Iterator[SimulatorServer]:
    yield simulator_server_module
    simulator_server_module.control.reset_faults()


def open_stream(sim: SimulatorServer, session_id: str, **headers: str) -> RawStream:
    return RawStream(
        sim.base_url, f"/v1/meeting-buddy/sessions/{session_id}/stream", headers=headers
    )


def manual_session(sim: SimulatorServer, *steps: dict[str, str]) -> str:
    session_id = sim.control.create_session(session_id=new_session_id(), manual=True)["session_id"]
    for step in steps:
        sim.control.emit(session_id, **step)
    return session_id


def test_the_example_block_in_this_test_is_the_one_in_the_spec() -> None:
    if not SPEC.exists():
        pytest.skip("upstream-api.md is not next to this checkout")
    blocks = re.findall(r"```\n(event: status\n.*?)```", SPEC.read_text(), flags=re.S)
    assert blocks[0] == PART_A_EXAMPLE


def test_part_a_example_reproduced_byte_for_byte(simulator_server: SimulatorServer) -> None:
    sim, sid = simulator_server, "mbsess_abc123def456"
    sim.control.create_session(session_id=sid, manual=True)
    sim.control.emit(sid, status="joining", timestamp="2025-12-11T10:00:05Z")
    with open_stream(sim, sid) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache"
        stream.read_until(KEEPALIVE)  # the current status, then the first keepalive
        sim.control.emit(sid, status="active", timestamp="2025-12-11T10:00:30Z")
        sim.control.emit(sid, join="Alice", timestamp="2025-12-11T10:01:00Z")
        sim.control.emit(sid, status="completed", timestamp="2025-12-11T10:30:00Z")
        body = stream.read_to_end()
    assert stream.ended, "the response ends after close"
    first_keepalive = body.index(KEEPALIVE) + len(KEEPALIVE)
    # keepalives are timing: keep the first (waited for), drop any that raced in later
    body = body[:first_keepalive] + body[first_keepalive:].replace(KEEPALIVE, b"")
    assert body.decode() == PART_A_EXAMPLE + "\n"  # the example omits the final blank line


def test_subscribers_get_current_status_first_then_live_events(sim: SimulatorServer) -> None:
    sid = manual_session(sim, {"status": "joining"}, {"status": "active"})
    streams = [open_stream(sim, sid) for _ in range(3)]
    try:
        for stream in streams:
            stream.read_until(b"\n\n")
            [snapshot] = events(stream.body)
            assert snapshot.json()["status"] == snapshot.json()["previous_status"] == "active"
        sim.control.emit(sid, join="Zoë Müller")
        sim.control.emit(sid, leave="Zoë Müller")
        sim.control.emit(sid, status="recording")
        for stream in streams:
            stream.read_until(b'"recording"')
            live = [e.json() for e in events(stream.body)][1:]
            assert [e.get("event") or e["status"] for e in live] == ["joined", "left", "recording"]
            assert live[0]["participant_name"] == "Zoë Müller"
            assert "status" not in live[0] and "previous_status" not in live[0]
        stats = sim.control.stats()
        assert stats["stream_connections_total"][sid] == 3
        assert stats["open_streams"][sid] == 3
    finally:
        for stream in streams:
            stream.close()
    wait_until(lambda: sid not in sim.control.stats()["open_streams"], what="the stream to close")


def test_a_script_runs_to_close_on_its_own(sim: SimulatorServer) -> None:
    script = [
        {"after": 0.1, "status": "joining"},
        {"after": 0.1, "status": "waiting"},
        {"after": 0.1, "status": "active"},
        {"after": 0.1, "join": "José García"},
        {"after": 0.1, "status": "failed", "error_code": "REMOVED_BY_HOST", "error_message": "Bot was removed from the meeting by the host"},
    ]  # fmt: skip
    sid = sim.control.create_session(session_id=new_session_id(), script=script)["session_id"]
    with open_stream(sim, sid) as stream:
        body = stream.read_to_end()
    received = [(e.event, e.json()) for e in events(body)]
    assert received[-1] == ("close", {"reason": "session_ended"})
    failed = received[-2][1]
    assert (failed["status"], failed["error_code"]) == ("failed", "REMOVED_BY_HOST")
    assert failed["error_message"] == "Bot was removed from the meeting by the host"
    names = [d.get("participant_name") for _, d in received]
    assert "José García" in names


def test_an_ended_session_gives_its_final_status_and_close(sim: SimulatorServer) -> None:
    sid = manual_session(
        sim,
        {"status": "joining"},
        {"status": "failed", "error_code": "WAITING_ROOM_TIMEOUT", "error_message": "Bot was not admitted from the waiting room"},
    )  # fmt: skip
    with open_stream(sim, sid) as stream:
        body = stream.read_to_end(timeout=5)
    received = events(body)
    assert [e.event for e in received] == ["status", "close"]
    assert received[0].json()["error_code"] == "WAITING_ROOM_TIMEOUT"


def test_keepalive_every_interval(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    with open_stream(sim, sid) as stream:
        started = time.monotonic()
        stream.read_until(b"\n\n")
        arrivals = []
        for count in range(1, 4):
            while stream.body.count(KEEPALIVE) < count:
                stream.next_chunk(time.monotonic() + 5)
            arrivals.append(time.monotonic() - started)
    # --keepalive 1: one per second, not a flood. (Only lower bounds: a busy machine reads
    # them late, never early; how soon they come is the simulator's timer, not asserted.)
    assert arrivals[0] >= 0.6 and arrivals[2] >= 2.0, arrivals


def test_client_disconnect_is_noticed(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    stream = open_stream(sim, sid)
    stream.read_until(b"\n\n")
    assert sim.control.stats()["open_streams"][sid] == 1
    stream.close()
    wait_until(lambda: sid not in sim.control.stats()["open_streams"], what="the stream to close")
    sim.control.emit(sid, status="joining")  # nobody is left to write to: no error
    assert sim.control.stats()["stream_connections_total"][sid] == 1


# -- fault knobs ---------------------------------------------------------------------------


def test_drop_after_events_ends_the_response_without_close(sim: SimulatorServer) -> None:
    sid = manual_session(sim, {"status": "joining"})
    sim.control.set_faults(sid, drop_after_events=2, drop_times=1)
    with open_stream(sim, sid) as stream:
        stream.read_until(b"\n\n")
        sim.control.emit(sid, status="active")
        body = stream.read_to_end(timeout=5)
    assert [e.json()["status"] for e in events(body)] == ["joining", "active"]
    assert b"close" not in body
    with open_stream(sim, sid) as again:  # drop_times=1: the next connection is healthy
        again.read_until(b"\n\n")
        sim.control.emit(sid, status="completed")
        assert events(again.read_to_end())[-1].event == "close"


def test_drop_applies_to_every_connection_without_drop_times(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(sid, drop_after_events=1)
    for _ in range(2):
        with open_stream(sim, sid) as stream:
            body = stream.read_to_end(timeout=5)
        assert len(events(body)) == 1 and b"close" not in body


@pytest.mark.parametrize("keepalives", [False, True])
def test_stall_holds_events_back(sim: SimulatorServer, keepalives: bool) -> None:
    sid = manual_session(sim)
    with open_stream(sim, sid) as stream:
        stream.read_until(b"\n\n")
        sim.control.set_faults(sid, stall={"seconds": 2.5, "keepalives": keepalives})
        stalled_at = time.monotonic()
        sim.control.emit(sid, status="joining")
        arrivals: list[tuple[float, bytes]] = []  # (seconds into the stall, piece)
        while b'"joining"' not in stream.body:
            piece = stream.next_chunk(time.monotonic() + 10)
            assert piece is not None
            arrivals.append((time.monotonic() - stalled_at, piece))
    held_for, last = arrivals[-1]
    assert b'"joining"' in last
    assert held_for >= 2.0, "the event waited for the stall to end"
    # bytes already in flight when the stall began may arrive in its first moments
    late = [piece for at, piece in arrivals[:-1] if at > 0.5]
    if keepalives:
        assert late and all(piece == KEEPALIVE for piece in late)
    else:
        assert late == [], "a silent stall sends nothing at all"


def test_fail_next_answers_503_with_retry_after(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(sid, fail_next={"count": 2, "status": 503, "retry_after": 3})
    url = sim.stream_url(sid)
    for _ in range(2):
        response = httpx.get(url)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        error = response.json()["error"]
        assert (error["code"], error["status"], error["type"]) == (
            "SERVICE_UNAVAILABLE",
            503,
            "server_error",
        )
    with open_stream(sim, sid) as stream:
        assert stream.status == 200
    assert sim.control.stats()["stream_connections_total"][sid] == 3


def test_fail_next_other_statuses_and_bare_bodies(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(
        sid, fail_next={"count": 1, "status": 429, "retry_after": None, "envelope": False}
    )
    response = httpx.get(sim.stream_url(sid))
    assert (response.status_code, response.content) == (429, b"")
    assert "retry-after" not in response.headers


def test_malformed_event_comes_before_the_real_one(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(sid, malformed_next=1)
    with open_stream(sim, sid) as stream:
        stream.read_until(b'"initializing"')
        sim.control.emit(sid, status="joining")
        stream.read_until(b'"joining"')
    received = events(stream.body)
    assert received[0].event == "status"
    with pytest.raises(json.JSONDecodeError):
        received[0].json()
    assert [e.json()["status"] for e in received[1:]] == ["initializing", "joining"]


def test_unknown_event_name(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(sid, unknown_event_next=1)
    with open_stream(sim, sid) as stream:
        stream.read_until(b'"initializing"')
    first, second = events(stream.body)
    assert first.event == "bot_metrics" and first.json()["session_id"] == sid
    assert second.event == "status"


def test_chunk_size_splits_every_write(sim: SimulatorServer) -> None:
    sid = manual_session(sim, {"status": "joining"})
    with open_stream(sim, sid) as plain:
        plain.read_until(b"\n\n")
    sim.control.set_faults(sid, chunk_size=3)
    with open_stream(sim, sid) as chunked:
        chunked.read_until(b"\n\n")
        sim.control.emit(sid, join="Zoë Müller")  # multi-byte UTF-8 cut across chunks
        chunked.read_frames(2)
    assert chunked.body.startswith(plain.body)
    assert all(len(chunk) <= 3 for chunk in chunked.chunks)
    assert len(chunked.chunks) > 50
    assert events(chunked.body)[1].json()["participant_name"] == "Zoë Müller"


@pytest.mark.parametrize(("ending", "newline"), [("crlf", b"\r\n"), ("cr", b"\r")])
def test_line_endings(sim: SimulatorServer, ending: str, newline: bytes) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(sid, line_ending=ending)
    with open_stream(sim, sid) as stream:
        stream.read_until(b": keepalive" + newline + newline)
        sim.control.emit(sid, status="completed")
        body = stream.read_to_end()
    bare_lf = body.replace(b"\r\n", b"") if ending == "crlf" else body
    assert b"\n" not in bare_lf
    assert body.startswith(b"event: status" + newline + b"data: {")
    assert [e.event for e in events(body)] == ["status", "status", "close"]


def test_send_ids_and_resume_with_last_event_id(sim: SimulatorServer) -> None:
    sid = manual_session(sim, {"status": "joining"})
    sim.control.set_faults(sid, send_ids=True)
    with open_stream(sim, sid) as stream:
        stream.read_until(b"\n\n")
        sim.control.emit(sid, status="active")
        stream.read_until(b'"active"')
    ids = [int(e.id or 0) for e in events(stream.body)]
    assert ids[0] >= 1 and ids[1] == ids[0] + 1
    sim.control.emit(sid, join="Łukasz Nowak")  # missed while away
    with open_stream(sim, sid, **{"Last-Event-ID": str(ids[1])}) as resumed:
        resumed.read_until(b"\n\n")
    [replayed] = events(resumed.body)
    assert replayed.json()["participant_name"] == "Łukasz Nowak"
    assert int(replayed.id or 0) == ids[1] + 1


def test_wrong_content_type_for_the_next_connections(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(sid, wrong_content_type_next=1)
    response = httpx.get(sim.stream_url(sid))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert b"<html" in response.content
    with open_stream(sim, sid) as stream:
        assert stream.headers["content-type"] == "text/event-stream"


def test_global_faults_apply_to_every_session_and_reset(sim: SimulatorServer) -> None:
    first, second = manual_session(sim), manual_session(sim)
    sim.control.set_faults(fail_next={"count": 2, "status": 502, "retry_after": 1})
    assert httpx.get(sim.stream_url(first)).status_code == 502
    assert httpx.get(sim.stream_url(second)).status_code == 502
    sim.control.set_faults(wrong_content_type_next=5)
    sim.control.reset_faults()
    with open_stream(sim, first) as stream:
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.read_frames(1)[0].event == "status"


def test_retry_field_first_when_asked(sim: SimulatorServer) -> None:
    sid = manual_session(sim)
    sim.control.set_faults(sid, retry_ms=1500)
    with open_stream(sim, sid) as stream:
        stream.read_frames(2)
    assert stream.body.startswith(b"retry: 1500\n\nevent: status\n")


def test_ended_sessions_can_answer_404_instead(sim: SimulatorServer) -> None:
    sid = manual_session(sim, {"status": "completed"})
    running = manual_session(sim)
    sim.control.set_faults(ended_as_404=True)
    response = httpx.get(sim.stream_url(sid))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "SESSION_NOT_FOUND"
    with open_stream(sim, running) as stream:
        assert stream.status == 200, "running sessions still stream"
