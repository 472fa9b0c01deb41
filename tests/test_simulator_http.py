"""Every simulator route and error envelope, over a real socket to `simulate_upstream`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import SimulatorServer, _simulator_server
from tests.simulator_helpers import new_session_id

API = "/v1/meeting-buddy"


@pytest.fixture
def sim(simulator_server_module: SimulatorServer) -> Iterator[SimulatorServer]:
    yield simulator_server_module
    simulator_server_module.control.reset_faults()


@pytest.fixture(scope="module")
def token_sim() -> Iterator[SimulatorServer]:
    yield from _simulator_server(token="test-token")


def assert_envelope(response: httpx.Response, status: int, code: str, **details: Any) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"success", "error"}
    assert body["success"] is False
    error = body["error"]
    assert set(error) == {
        "code", "message", "system_message", "type", "status", "details", "trace_id", "timestamp"
    }  # fmt: skip
    assert (error["code"], error["status"]) == (code, status)
    assert error["type"] == ("client_error" if status < 500 else "server_error")
    assert error["message"]
    assert uuid.UUID(error["trace_id"])
    assert response.headers["x-request-id"] == error["trace_id"]
    assert datetime.fromisoformat(error["timestamp"]).tzinfo is not None
    for key, value in details.items():
        assert error["details"][key] == value


def test_start_get_and_list_a_session(sim: SimulatorServer) -> None:
    link = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0"
    created = httpx.post(sim.url(f"{API}/sessions"), json={"meeting_link": link})
    assert created.status_code == 201
    session = created.json()
    assert session["session_id"].startswith("mbsess_")
    assert (session["status"], session["platform"], session["bot_name"]) == (
        "initializing",
        "teams",
        "Meeting Buddy",
    )
    assert (session["transcription_enabled"], session["transcription_language"]) == (True, "en")
    fetched = httpx.get(sim.url(f"{API}/sessions/{session['session_id']}"))
    assert fetched.status_code == 200
    assert fetched.json()["meeting_link"] == link
    listed = httpx.get(sim.url(f"{API}/sessions"), params={"page_size": 100}).json()
    assert session["session_id"] in [s["session_id"] for s in listed["sessions"]]


def test_start_takes_the_documented_options(sim: SimulatorServer) -> None:
    body = {
        "meeting_link": "https://us02web.zoom.us/j/123456789",
        "bot_name": "Notetaker",
        "transcription_enabled": False,
        "transcription_language": "de",
        "recording_mode": "audio_only",
    }
    session = httpx.post(sim.url(f"{API}/sessions"), json=body).json()
    assert (session["platform"], session["bot_name"]) == ("zoom", "Notetaker")
    assert (session["transcription_enabled"], session["transcription_language"]) == (False, "de")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "meeting_link"),
        ({"meeting_link": "https://example.com/x"}, "meeting_link"),
        ({"meeting_link": "http://meet.google.com/abc-defg-hij"}, "meeting_link"),
        ({"meeting_link": "https://meet.google.com/a", "bot_name": 5}, "bot_name"),
        (
            {"meeting_link": "https://meet.google.com/a", "transcription_enabled": "yes"},
            "transcription_enabled",
        ),
    ],
)
def test_start_validation_errors(sim: SimulatorServer, body: dict[str, Any], field: str) -> None:
    response = httpx.post(sim.url(f"{API}/sessions"), json=body)
    assert_envelope(response, 422, "VALIDATION_ERROR", field=field)


def test_start_with_a_body_that_is_not_json(sim: SimulatorServer) -> None:
    response = httpx.post(sim.url(f"{API}/sessions"), content=b"{nope")
    assert_envelope(response, 422, "VALIDATION_ERROR")


def test_list_pages_are_one_based_newest_first_and_filterable(sim: SimulatorServer) -> None:
    marker = uuid.uuid4().hex
    ids = [
        sim.control.create_session(
            session_id=new_session_id(), bot_name=f"Bot {marker}", manual=True
        )["session_id"]
        for _ in range(5)
    ]
    sim.control.emit(ids[0], status="joining")
    params: dict[str, str | int] = {"search": marker, "page_size": 2}
    pages = [
        httpx.get(sim.url(f"{API}/sessions"), params={**params, "page": page}).json()
        for page in (1, 2, 3, 4)
    ]
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    assert all(p["total"] == 5 and p["total_pages"] == 3 and p["page_size"] == 2 for p in pages)
    seen = [s["session_id"] for p in pages for s in p["sessions"]]
    assert seen == list(reversed(ids))
    assert pages[3]["sessions"] == []
    joining = httpx.get(
        sim.url(f"{API}/sessions"), params={"search": marker, "status": "joining"}
    ).json()
    assert [s["session_id"] for s in joining["sessions"]] == [ids[0]]
    unknown = httpx.get(sim.url(f"{API}/sessions"), params={"status": "no-such-status"}).json()
    assert (unknown["sessions"], unknown["total"], unknown["total_pages"]) == ([], 0, 0)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"page": "0"}, "page"), ({"page": "x"}, "page"), ({"page_size": "101"}, "page_size")],
)
def test_list_rejects_bad_paging(sim: SimulatorServer, params: dict[str, str], field: str) -> None:
    response = httpx.get(sim.url(f"{API}/sessions"), params=params)
    assert_envelope(response, 422, "VALIDATION_ERROR", field=field)


@pytest.mark.parametrize("how", ["delete", "post-stop"])
def test_stop_is_idempotent(sim: SimulatorServer, how: str) -> None:
    sid = sim.control.create_session(session_id=new_session_id(), manual=True)["session_id"]
    sim.control.emit(sid, status="joining")
    sim.control.emit(sid, status="active")

    def stop() -> httpx.Response:
        if how == "delete":
            return httpx.delete(sim.url(f"{API}/sessions/{sid}"))
        return httpx.post(sim.url(f"{API}/sessions/{sid}/stop"))

    first, second = stop(), stop()
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "completed"
    assert first.json()["leave_timestamp"] is not None
    assert first.json()["total_duration_seconds"] is not None
    assert first.json()["has_recording"] is True
    assert first.json()["current_participants"] == {"count": 0, "names": []}


def test_analytics_active_is_a_bare_array_of_the_active_set(sim: SimulatorServer) -> None:
    running = sim.control.create_session(
        session_id=new_session_id(), platform="google_meet", manual=True
    )["session_id"]
    waiting = sim.control.create_session(session_id=new_session_id(), manual=True)["session_id"]
    for step in ({"status": "joining"}, {"status": "active"}, {"join": "李雷"}):
        sim.control.emit(running, **step)
    sim.control.emit(waiting, status="waiting")
    body = httpx.get(sim.url(f"{API}/analytics/active")).json()
    assert isinstance(body, list)
    by_id = {item["session_id"]: item for item in body}
    assert waiting not in by_id, "waiting is not in the documented active set"
    item = by_id[running]
    assert set(item) == {
        "session_id", "meeting_link", "platform", "status", "bot_name", "join_timestamp",
        "current_participants", "duration_so_far_seconds",
    }  # fmt: skip
    assert (item["platform"], item["status"], item["current_participants"]) == (
        "meet",
        "active",
        ["李雷"],
    )
    assert all(i["status"] in {"initializing", "joining", "active", "recording"} for i in body)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/sessions/{{sid}}"),
        ("DELETE", f"{API}/sessions/{{sid}}"),
        ("POST", f"{API}/sessions/{{sid}}/stop"),
        ("GET", f"{API}/sessions/{{sid}}/stream"),
    ],
)
def test_session_routes_404_and_422(sim: SimulatorServer, method: str, path: str) -> None:
    missing = httpx.request(method, sim.url(path.format(sid="mbsess_missing")))
    assert_envelope(missing, 404, "SESSION_NOT_FOUND", session_id="mbsess_missing")
    for bad in ("sess_123", "mbsess_", "mbsess_has.dot", "MBSESS_x"):
        malformed = httpx.request(method, sim.url(path.format(sid=bad)))
        assert_envelope(malformed, 422, "INVALID_SESSION_ID_FORMAT", session_id=bad)


def test_unknown_routes_and_wrong_methods(sim: SimulatorServer) -> None:
    assert_envelope(httpx.get(sim.url("/v1/meeting-buddy/nothing")), 404, "NOT_FOUND")
    assert_envelope(httpx.get(sim.url("/")), 404, "NOT_FOUND")
    wrong = httpx.put(sim.url(f"{API}/sessions"))
    assert_envelope(wrong, 405, "METHOD_NOT_ALLOWED")
    assert wrong.headers["allow"] == "GET, POST"
    assert_envelope(
        httpx.post(sim.url(f"{API}/sessions/mbsess_x/stream")), 405, "METHOD_NOT_ALLOWED"
    )
    assert_envelope(httpx.get(sim.url(f"{API}/sessions/mbsess_x/stop")), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/sessions"),
        ("POST", f"{API}/sessions"),
        ("GET", f"{API}/sessions/mbsess_abc"),
        ("DELETE", f"{API}/sessions/mbsess_abc"),
        ("POST", f"{API}/sessions/mbsess_abc/stop"),
        ("GET", f"{API}/sessions/mbsess_abc/stream"),
        ("GET", f"{API}/analytics/active"),
    ],
)
def test_token_is_required_on_every_upstream_route(
    token_sim: SimulatorServer, method: str, path: str
) -> None:
    sim = token_sim
    missing = httpx.request(method, sim.url(path))
    assert_envelope(missing, 401, "AUTHENTICATION_REQUIRED")
    assert missing.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer wrong", "Basic dGVzdC10b2tlbg==", "test-token"):
        wrong = httpx.request(method, sim.url(path), headers={"Authorization": header})
        assert_envelope(wrong, 401, "TOKEN_INVALID")
    right = httpx.request(
        method,
        sim.url(path),
        headers=sim.headers,
        json={"meeting_link": "https://meet.google.com/x"},
    )
    assert right.status_code in (200, 201, 404)


def test_control_api_needs_no_token_and_validates(
    simulator_server_with_token: SimulatorServer,
) -> None:
    sim = simulator_server_with_token
    sid = sim.control.create_session(session_id=new_session_id(), manual=True)["session_id"]
    conflict = httpx.post(sim.url("/_control/sessions"), json={"session_id": sid})
    assert_envelope(conflict, 409, "CONFLICT")
    for body in (
        {"session_id": "nope"},
        {"platform": "skype"},
        {"script": [{"status": "joining", "join": "A"}]},
        {"script": "joining"},
        {"colour": "red"},
    ):
        assert_envelope(
            httpx.post(sim.url("/_control/sessions"), json=body), 422, "VALIDATION_ERROR"
        )
    emit = sim.url(f"/_control/sessions/{sid}/emit")
    assert_envelope(httpx.post(emit, json={"after": 1, "status": "x"}), 422, "VALIDATION_ERROR")
    assert_envelope(httpx.post(emit, json={}), 422, "VALIDATION_ERROR")
    missing = sim.url("/_control/sessions/mbsess_missing/emit")
    assert_envelope(httpx.post(missing, json={"status": "active"}), 404, "SESSION_NOT_FOUND")
    sim.control.emit(sid, status="completed")
    assert_envelope(httpx.post(emit, json={"status": "active"}), 409, "CONFLICT")
    bad_faults = httpx.post(sim.url("/_control/faults"), json={"drop_after_events": "two"})
    assert_envelope(bad_faults, 422, "VALIDATION_ERROR")
    with pytest.raises(TypeError):
        sim.control.set_faults(colour="red")


def test_emit_answers_with_the_session_and_the_events(sim: SimulatorServer) -> None:
    sid = sim.control.create_session(session_id=new_session_id(), manual=True)["session_id"]
    answer = sim.control.emit(sid, status="failed", error_code="X_CODE", error_message="msg")
    assert answer["session"]["status"] == "failed"
    assert answer["session"]["error_code"] == "X_CODE"
    assert [e["event"] for e in answer["events"]] == ["status", "close"]
    assert answer["events"][0]["data"]["error_message"] == "msg"


def test_faults_and_stats_read_back(sim: SimulatorServer) -> None:
    sid = new_session_id()
    state = sim.control.set_faults(sid, chunk_size=5, line_ending="crlf")
    assert state["sessions"][sid]["chunk_size"] == 5
    assert sim.control.faults()["sessions"][sid]["line_ending"] == "crlf"
    sim.control.reset_faults(sid)
    assert sid not in sim.control.faults()["sessions"]
    before = sim.control.stats()
    httpx.get(sim.url(f"{API}/sessions"))
    after = sim.control.stats()
    assert after["requests_total"] == before["requests_total"] + 1
    assert set(after) == {
        "stream_connections_total",
        "open_streams",
        "requests_total",
        "delivered",
        "transcript_requests",
        "session_reads",
    }
    httpx.get(sim.url(f"{API}/sessions/mbsess_nobodyknows"))
    assert sim.control.stats()["session_reads"].get("mbsess_nobodyknows") == 1


def test_control_routes_are_absent_without_control() -> None:
    from tests.support import free_port, run_server

    port = free_port()
    args = ["manage.py", "simulate_upstream", "--port", str(port), "--sessions", "3"]
    with run_server(
        [*args, "--seed", "4", "--no-control"], port=port, ready_path=f"{API}/sessions"
    ) as server:
        for path in ("/_control/stats", "/_control/faults", "/_control/eventsource-probe"):
            assert_envelope(httpx.get(server.base_url + path), 404, "NOT_FOUND")
        assert httpx.get(server.base_url + f"{API}/sessions").json()["total"] == 3
        assert f"Simulator serving on http://127.0.0.1:{port}/" in server.log()


def test_same_seed_gives_the_same_sessions_across_processes() -> None:
    from tests.support import free_port, run_server

    def fingerprints(seed: int) -> list[tuple[str, str, str, str]]:
        port = free_port()
        args = ["manage.py", "simulate_upstream", "--port", str(port), "--seed", str(seed)]
        args += ["--sessions", "6", "--no-arrivals", "--speed", "0.01"]
        with run_server(args, port=port, ready_path=f"{API}/sessions") as server:
            body = httpx.get(server.base_url + f"{API}/sessions").json()
        return sorted(
            (s["session_id"], s["platform"], s["meeting_link"], s["status"])
            for s in body["sessions"]
        )

    first = fingerprints(11)
    assert len(first) == 6
    assert fingerprints(11) == first
