"""The provider's own example clients (upstream-api.md Part A) read a simulated stream to `close`."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import SimulatorServer, _simulator_server
from tests.simulator_helpers import events, new_session_id
from tests.support import wait_until

STEPS: list[dict[str, Any]] = [
    {"status": "joining"},
    {"status": "active"},
    {"join": "Zoë Müller"},
    {"join": "李雷"},
    {"leave": "Zoë Müller"},
    {"status": "completed"},
]
EXPECTED = ["joining", "active", "joined", "joined", "left", "completed", "session_ended"]


@pytest.fixture(scope="module")
def token_sim() -> Iterator[SimulatorServer]:
    yield from _simulator_server(token="test-token")


def manual_session(sim: SimulatorServer) -> str:
    return str(sim.control.create_session(session_id=new_session_id(), manual=True)["session_id"])


def play(sim: SimulatorServer, session_id: str) -> None:
    """Once the client is subscribed (it has the current status), the meeting happens."""
    for step in STEPS:
        sim.control.emit(session_id, **step)


def summary(received: list[dict[str, Any]]) -> list[str]:
    """What each event says, after the initial snapshot (`initializing`)."""
    assert received[0].get("status") == "initializing"
    return [d.get("event") or d.get("status") or d["reason"] for d in received[1:]]


def test_curl_reads_the_stream_to_close(token_sim: SimulatorServer) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    sid = manual_session(token_sim)
    with subprocess.Popen(
        [curl, "-N", "-sS", "-H", "Authorization: Bearer test-token", token_sim.stream_url(sid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as curl_process:
        wait_until(
            lambda: token_sim.control.stats()["open_streams"].get(sid) == 1, what="the stream"
        )
        play(token_sim, sid)
        stdout, stderr = curl_process.communicate(timeout=30)
    assert curl_process.returncode == 0, stderr
    received = events(stdout)
    assert summary([e.json() for e in received]) == EXPECTED
    assert received[-1].event == "close"
    assert stdout.endswith(b'event: close\ndata: {"reason":"session_ended"}\n\n')


def test_python_requests_iter_lines_loop(token_sim: SimulatorServer) -> None:
    sid = manual_session(token_sim)
    received: list[dict[str, Any]] = []
    event_type = None
    with requests.get(
        token_sim.stream_url(sid),
        headers={"Authorization": "Bearer test-token"},
        stream=True,
        timeout=10,
    ) as response:
        response.raise_for_status()
        for raw in response.iter_lines():
            line = raw.decode("utf-8")
            if not line or line.startswith(":"):
                continue
            if line.startswith("event: "):
                event_type = line.removeprefix("event: ")
            elif line.startswith("data: "):
                received.append(json.loads(line.removeprefix("data: ")))
                if len(received) == 1:
                    play(token_sim, sid)
                if event_type == "close":
                    break
    assert summary(received) == EXPECTED
    assert received[3]["participant_name"] == "Zoë Müller"


@pytest.mark.browser
async def test_browser_eventsource_reads_the_stream_to_close(
    chromium: Any, simulator_server: SimulatorServer
) -> None:
    sid = manual_session(simulator_server)
    page = await chromium.new_page()
    try:
        await page.goto(simulator_server.url(f"/_control/eventsource-probe?session_id={sid}"))
        await page.wait_for_selector("#events li", timeout=20_000)
        play(simulator_server, sid)
        await page.wait_for_selector("body[data-state=closed]", timeout=20_000)
        items = await page.eval_on_selector_all(
            "#events li", "els => els.map(e => [e.dataset.event, e.textContent])"
        )
        errors = await page.eval_on_selector("body", "b => b.dataset.errors || null")
    finally:
        await page.close()
    assert [kind for kind, _ in items] == ["status"] * 7 + ["close"]
    received = [json.loads(data) for _, data in items]
    assert summary(received) == EXPECTED
    assert received[4]["participant_name"] == "李雷"
    assert errors is None, "the stream never failed before close"
