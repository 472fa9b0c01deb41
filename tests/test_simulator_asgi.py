"""The ASGI connection handling itself, in process: disconnects end the stream, no task leaks.

These drive the app through the ASGI interface directly (no server), which is exactly the
contract daphne uses; everything socket-level is covered in test_simulator_stream.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sessions_monitor.simulator import Simulator
from sessions_monitor.simulator.control import AsyncSimulatorControl
from sessions_monitor.simulator.http import Message
from sessions_monitor.simulator.scenarios import Step
from tests.conftest import SimulatorServer
from tests.simulator_helpers import new_session_id
from tests.support import eventually


class Client:
    """One ASGI HTTP exchange: collects what the app sends; `disconnect()` hangs up."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        self.sent: list[Message] = []
        self.body_event = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        self.body_event.set()

    def disconnect(self) -> None:
        self.inbox.put_nowait({"type": "http.disconnect"})

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}


async def test_disconnect_ends_the_stream_and_cleans_up() -> None:
    sim = Simulator(initial_sessions=0, arrivals=False, keepalive_seconds=0.05)
    await sim.start()
    try:
        sim.create_session(session_id="mbsess_asgi", manual=True)
        client = Client()
        before = asyncio.all_tasks()
        app = asyncio.create_task(
            sim.asgi_app(
                scope("/v1/meeting-buddy/sessions/mbsess_asgi/stream"),
                client.receive,
                client.send,
            )
        )
        async with asyncio.timeout(5):
            while b": keepalive" not in client.body:
                client.body_event.clear()
                await client.body_event.wait()
        assert sim.stats.open_streams["mbsess_asgi"] == 1
        client.disconnect()
        async with asyncio.timeout(5):
            await app
        assert sim.stats.open_streams["mbsess_asgi"] == 0
        assert sim._subscribers == {}
        await eventually(
            lambda: asyncio.all_tasks() - before - {asyncio.current_task()} == set(),
            what="the stream's tasks to end",
        )
        sent_after = len(client.sent)
        sim.apply_step("mbsess_asgi", Step(status="joining"))
        assert len(client.sent) == sent_after, "nothing is written after a disconnect"
    finally:
        await sim.stop()


async def test_simulator_stop_ends_open_streams_without_close() -> None:
    sim = Simulator(initial_sessions=0, arrivals=False)
    await sim.start()
    sim.create_session(session_id="mbsess_stop", manual=True)
    client = Client()
    app = asyncio.create_task(
        sim.asgi_app(
            scope("/v1/meeting-buddy/sessions/mbsess_stop/stream"), client.receive, client.send
        )
    )
    async with asyncio.timeout(5):
        while b"\n\n" not in client.body:
            client.body_event.clear()
            await client.body_event.wait()
    await sim.stop()
    async with asyncio.timeout(5):
        await app
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert b"close" not in client.body


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_other_scope_types(kind: str) -> None:
    sim = Simulator(initial_sessions=0, arrivals=False)
    client = Client()
    if kind == "lifespan":
        client.inbox = asyncio.Queue()
        for message in ("lifespan.startup", "lifespan.shutdown"):
            client.inbox.put_nowait({"type": message})
    async with asyncio.timeout(5):
        await sim.asgi_app({"type": kind, "path": "/"}, client.receive, client.send)
    expected = (
        ["websocket.close"]
        if kind == "websocket"
        else ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    )
    assert [m["type"] for m in client.sent] == expected


async def test_async_control_client(simulator_server: SimulatorServer) -> None:
    sid = new_session_id()
    async with AsyncSimulatorControl(simulator_server.base_url) as control:
        created = await control.create_session(session_id=sid, manual=True, bot_name="Async")
        assert (created["session_id"], created["bot_name"]) == (sid, "Async")
        emitted = await control.emit(sid, status="joining")
        assert emitted["session"]["status"] == "joining"
        state = await control.set_faults(sid, malformed_next=2)
        assert state["sessions"][sid]["malformed_next"] == 2
        assert (await control.faults())["sessions"][sid]["malformed_next"] == 2
        await control.reset_faults()
        assert (await control.faults())["sessions"] == {}
        stats = await control.stats()
        assert stats["stream_connections_total"] == {}


async def test_an_unexpected_error_is_a_500_envelope(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Simulator):
        def sessions(self, *, status: str | None = None, search: str | None = None) -> Any:
            raise RuntimeError("boom")

    sim = Broken(initial_sessions=0, arrivals=False)
    client = Client()
    await sim.asgi_app(scope("/v1/meeting-buddy/sessions"), client.receive, client.send)
    assert client.sent[0]["status"] == 500
    error = json.loads(client.body)["error"]
    assert (error["code"], error["type"]) == ("INTERNAL_SERVER_ERROR", "server_error")
    assert "boom" in caplog.text
