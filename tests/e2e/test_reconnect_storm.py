"""After a restart every open page and stream reconnects at once: `serve` must accept them
all (a listen backlog of Twisted's default 50 refused most), on either server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.relay_stack import RelayStack, relay_stack

CLIENTS = 1500


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def stack(
    request: Any, simulator_server_module: Any, tmp_path_factory: Any
) -> Iterator[RelayStack]:
    with relay_stack(
        simulator_server_module, tmp_path_factory.mktemp("storm"), MEETINGDASH_SERVER=request.param
    ) as running:
        yield running


async def status_line(host: str, port: int) -> str:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        return f"refused: {exc}"
    try:
        writer.write(
            f"GET /static/css/app.css HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), 60)
        return line.decode().strip()
    except (OSError, TimeoutError) as exc:
        return f"failed: {exc!r}"
    finally:
        writer.close()


async def test_every_client_of_a_reconnect_storm_is_accepted(stack: RelayStack) -> None:
    url = urlsplit(stack.base_url)
    assert url.hostname and url.port
    lines = await asyncio.gather(*(status_line(url.hostname, url.port) for _ in range(CLIENTS)))
    failures = [line for line in lines if not line.startswith("HTTP/1.1 200")]
    assert not failures, f"{len(failures)} of {CLIENTS}: {sorted(set(failures))[:5]}"
