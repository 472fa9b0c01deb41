"""Benchmark the upstream client against same-run baselines.

    python bench/upstream_client.py [--events 50000] [--repeat 5] [--streams 1000] [--window 4]

1. Parse rate, one stream: a local source process writes `--events` status events (Part A
   shape, ~190 B each) as fast as the socket takes them, then `close`. Variants, interleaved,
   median of `--repeat` runs:
   - ours: `MeetingBuddyClient.stream_status`
   - our decoder + parse over `aiter_bytes()`, without the wrapper (watchdog, metrics, checks)
   - httpx-sse alone: `aconnect_sse` + `aiter_sse()` + `json.loads` (the usual code)
   - bare asyncio: `open_connection` + `readline()` + `json.loads` (the floor)
2. 1,000 idle streams in one process to the simulator (`--keepalive 1`, so 1,000 keepalive
   comments per second arrive): RSS delta per stream and CPU, each variant in a fresh child
   process (RSS does not shrink after frees, so variants cannot share a process):
   - ours: `follow_status` on one shared client
   - httpx-sse alone on an equally sized shared client (read timeout 45 s)
   - bare asyncio line reader
   CPU is the median of 3 windows of `--window` seconds; "per keepalive" divides by the
   keepalives expected in the window (streams × window / interval).

Loopback only; the machine's other load adds noise, so compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from httpx_sse import aconnect_sse  # noqa: E402

from sessions_monitor.upstream import (  # noqa: E402
    EventStreamDecoder,
    LinkState,
    LinkStateName,
    MeetingBuddyClient,
    StatusChanged,
    make_http_client,
    parse_event,
)

SID = "mbsess_benchparse"
KEEPALIVE_SECONDS = 1.0


# -- helpers ---------------------------------------------------------------------------------


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def payload(events: int) -> bytes:
    lines = []
    for n in range(events):
        data = {
            "session_id": SID,
            "status": "active" if n % 2 else "recording",
            "previous_status": "active",
            "timestamp": "2025-12-11T10:00:30Z",
            "error_message": None,
            "error_code": None,
        }
        lines.append(f"event: status\ndata: {json.dumps(data, separators=(',', ':'))}\n\n")
        if n % 50 == 0:
            lines.append(": keepalive\n\n")
    lines.append('event: close\ndata: {"reason":"session_ended"}\n\n')
    return "".join(lines).encode()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


# -- 1. the fast source and the parse-rate variants ------------------------------------------


async def serve_source(port: int, events: int) -> None:
    body = payload(events)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # the readiness probe
            writer.close()
            return
        writer.write(head + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def parse_ours(base: str, client: httpx.AsyncClient) -> int:
    upstream = MeetingBuddyClient(base, http_client=client)
    count = 0
    async for event in upstream.stream_status(SID, stall_seconds=30):
        count += isinstance(event, StatusChanged)
    return count


async def parse_ours_no_watchdog(base: str, client: httpx.AsyncClient) -> int:
    count = 0
    url = f"{base}/v1/meeting-buddy/sessions/{SID}/stream"
    async with aconnect_sse(client, "GET", url) as source:
        decoder = EventStreamDecoder()
        async for chunk in source.response.aiter_bytes():
            for sse in decoder.feed(chunk):
                count += isinstance(parse_event(sse), StatusChanged)
    return count


async def parse_httpx_sse(base: str, client: httpx.AsyncClient) -> int:
    count = 0
    url = f"{base}/v1/meeting-buddy/sessions/{SID}/stream"
    async with aconnect_sse(client, "GET", url) as source:
        async for sse in source.aiter_sse():
            data = json.loads(sse.data)
            if sse.event == "close":
                break
            count += "status" in data
    return count


async def parse_bare(base: str, client: httpx.AsyncClient) -> int:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /v1/meeting-buddy/sessions/{SID}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    count = 0
    async for line in reader:
        if line.startswith(b"data: "):
            data = json.loads(line[6:])
            count += "status" in data
    writer.close()
    return count


PARSERS: dict[str, Callable[[str, httpx.AsyncClient], Awaitable[int]]] = {
    "ours (stream_status)": parse_ours,
    "decoder+parse, no wrapper": parse_ours_no_watchdog,
    "httpx-sse aiter_sse": parse_httpx_sse,
    "bare asyncio readline": parse_bare,
}


def bench_parse(events: int, repeat: int) -> dict[str, tuple[float, float]]:
    port = free_port()
    source = subprocess.Popen(
        [sys.executable, __file__, "--source", str(port), "--events", str(events)],
        stdout=subprocess.DEVNULL,
    )
    try:
        return asyncio.run(measure_parse(f"http://127.0.0.1:{port}", port, events, repeat))
    finally:
        source.terminate()
        source.wait(5)


async def measure_parse(
    base: str, port: int, events: int, repeat: int
) -> dict[str, tuple[float, float]]:
    """Per variant: (median events/s of wall time, median µs of our CPU per event).

    CPU time of this process is the steadier figure on a shared machine: the source runs in
    another process, and other load changes wall time much more than our own CPU time."""
    rates: dict[str, list[float]] = {name: [] for name in PARSERS}
    cpu: dict[str, list[float]] = {name: [] for name in PARSERS}
    async with asyncio.timeout(30):
        while True:
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            probe.close()
            break
    async with make_http_client() as client:
        for parser in PARSERS.values():  # warm up
            await parser(base, client)
        for _ in range(repeat):
            for name, parser in PARSERS.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                count = await parser(base, client)
                elapsed = time.perf_counter() - started
                cpu[name].append((time.process_time() - cpu_started) / events * 1e6)
                assert count == events, (name, count)
                rates[name].append(events / elapsed)
    return {
        name: (statistics.median(rates[name]), statistics.median(cpu[name])) for name in PARSERS
    }


# -- 3. the watchdog alone -------------------------------------------------------------------


async def bench_watchdog(chunks: int = 200_000) -> tuple[float, float]:
    """µs per chunk of `anext()` bare and inside `asyncio.timeout()` (in-memory source)."""

    async def source() -> Any:
        for _ in range(chunks):
            yield b": keepalive\n\n"

    async def bare() -> None:
        it = source()
        with contextlib.suppress(StopAsyncIteration):
            while True:
                await anext(it)

    async def watched() -> None:
        it = source()
        with contextlib.suppress(StopAsyncIteration):
            while True:
                async with asyncio.timeout(45):
                    await anext(it)

    results: dict[str, list[float]] = {"bare": [], "watched": []}
    for _ in range(5):
        for name, fn in (("bare", bare), ("watched", watched)):
            started = time.perf_counter()
            await fn()
            results[name].append((time.perf_counter() - started) / chunks * 1e6)
    return statistics.median(results["bare"]), statistics.median(results["watched"])


# -- 2. idle streams -------------------------------------------------------------------------


async def hold_ours(
    base: str, sid: str, streams: int, ready: Callable[[], None]
) -> Callable[[], Awaitable[None]]:
    upstream = MeetingBuddyClient(base, http_client=make_http_client())
    live = 0
    stop = asyncio.Event()

    async def one() -> None:
        nonlocal live
        async with aclosing(upstream.follow_status(sid, stall_seconds=45)) as follow:
            async for item in follow:
                if isinstance(item, StatusChanged):
                    live += 1
                    if live == streams:
                        ready()
                    await asyncio.sleep(0)
                if isinstance(item, LinkState) and item.state is LinkStateName.RETRYING:
                    print(f"retrying: {item.reason}", file=sys.stderr)
                if stop.is_set():
                    break

    tasks = [asyncio.create_task(one()) for _ in range(streams)]

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.aclose()

    return close


async def hold_httpx_sse(
    base: str, sid: str, streams: int, ready: Callable[[], None]
) -> Callable[[], Awaitable[None]]:
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        timeout=httpx.Timeout(10.0, read=45.0),
    )
    live = 0
    url = f"{base}/v1/meeting-buddy/sessions/{sid}/stream"

    async def one() -> None:
        nonlocal live
        async with aconnect_sse(client, "GET", url) as source:
            async for sse in source.aiter_sse():
                json.loads(sse.data)
                live += 1
                if live == streams:
                    ready()

    tasks = [asyncio.create_task(one()) for _ in range(streams)]

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()

    return close


async def hold_bare(
    base: str, sid: str, streams: int, ready: Callable[[], None]
) -> Callable[[], Awaitable[None]]:
    host, port = base.removeprefix("http://").split(":")
    live = 0

    async def one() -> None:
        nonlocal live
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /v1/meeting-buddy/sessions/{sid}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        try:
            async for line in reader:
                if line.startswith(b"data: "):
                    json.loads(line[6:])
                    live += 1
                    if live == streams:
                        ready()
        finally:
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(streams)]

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return close


HOLDERS = {
    "ours (follow_status)": hold_ours,
    "httpx-sse alone": hold_httpx_sse,
    "bare asyncio": hold_bare,
}


async def idle_child(
    variant: str, base: str, sid: str, streams: int, window: float
) -> dict[str, Any]:
    # Warm up the code paths (imports, first connection) before the baseline RSS.
    warm_ready = asyncio.Event()
    close = await HOLDERS[variant](base, sid, 1, warm_ready.set)
    async with asyncio.timeout(30):
        await warm_ready.wait()
    await close()
    gc.collect()
    before = rss_kb()
    all_ready = asyncio.Event()
    started = time.monotonic()
    close = await HOLDERS[variant](base, sid, streams, all_ready.set)
    async with asyncio.timeout(120):
        await all_ready.wait()
    open_seconds = time.monotonic() - started
    await asyncio.sleep(2 * KEEPALIVE_SECONDS)  # settle: buffers allocated, keepalives flowing
    gc.collect()
    after = rss_kb()
    cpu: list[float] = []
    for _ in range(3):
        cpu_start, wall_start = time.process_time(), time.monotonic()
        await asyncio.sleep(window)
        cpu.append((time.process_time() - cpu_start) / (time.monotonic() - wall_start))
    await close()
    share = statistics.median(cpu)
    keepalives_per_second = streams / KEEPALIVE_SECONDS
    return {
        "variant": variant,
        "streams": streams,
        "open_seconds": open_seconds,
        "kb_per_stream": (after - before) / streams,
        "cpu_percent": share * 100,
        "us_per_keepalive": share / keepalives_per_second * 1e6,
    }


def bench_idle(streams: int, window: float) -> list[dict[str, Any]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "simulate_upstream",
            "--port",
            str(port),
            "--keepalive",
            str(KEEPALIVE_SECONDS),
            "--sessions",
            "0",
            "--no-arrivals",
            "--control",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = []
    try:
        wait_for(f"{base}/_control/stats", simulator)
        for index, variant in enumerate(HOLDERS):
            sid = f"mbsess_benchidle{index}"
            httpx.post(
                f"{base}/_control/sessions", json={"session_id": sid, "manual": True}
            ).raise_for_status()
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--idle-child",
                    variant,
                    "--base",
                    base,
                    "--sid",
                    sid,
                    "--streams",
                    str(streams),
                    "--window",
                    str(window),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if child.returncode != 0:
                raise RuntimeError(f"{variant} failed:\n{child.stderr}")
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    finally:
        simulator.terminate()
        simulator.wait(15)
    return results


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--source", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--idle-child", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--sid", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.source:
        asyncio.run(serve_source(args.source, args.events))
        return
    if args.idle_child:
        result = asyncio.run(
            idle_child(args.idle_child, args.base, args.sid, args.streams, args.window)
        )
        print(json.dumps(result))
        return

    print(
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}, {os.cpu_count()} cores, loopback"
    )
    print(f"\n1. Parse rate, one stream, {args.events:,} events per run, median of {args.repeat}")
    rates = bench_parse(args.events, args.repeat)
    base_rate, base_cpu = rates["httpx-sse aiter_sse"]
    for name, (rate, cpu) in rates.items():
        print(
            f"   {name:<26} {rate:>8,.0f} events/s ({rate / base_rate:4.2f}x)   "
            f"{cpu:5.1f} µs CPU/event ({cpu / base_cpu:4.2f}x httpx-sse)"
        )
    ours, bare = rates["ours (stream_status)"][1], rates["decoder+parse, no wrapper"][1]
    print(f"   wrapper cost (watchdog, metrics, checks): {ours - bare:+.1f} µs CPU/event")
    plain, watched = asyncio.run(bench_watchdog())
    print(
        f"   the watchdog alone: anext() {plain:.2f} µs/chunk bare, {watched:.2f} µs/chunk "
        f"inside asyncio.timeout() (+{watched - plain:.2f} µs per chunk)"
    )

    if args.skip_idle:
        return
    print(
        f"\n2. {args.streams:,} idle streams to the simulator (keepalive every {KEEPALIVE_SECONDS:g} s)"
    )
    results = bench_idle(args.streams, args.window)
    base_row = next(r for r in results if r["variant"] == "httpx-sse alone")
    for row in results:
        print(
            f"   {row['variant']:<22} open {row['open_seconds']:5.2f} s   "
            f"{row['kb_per_stream']:6.1f} KB/stream ({row['kb_per_stream'] / base_row['kb_per_stream']:4.2f}x)   "
            f"CPU {row['cpu_percent']:5.1f}% = {row['us_per_keepalive']:6.1f} µs/keepalive "
            f"({row['us_per_keepalive'] / base_row['us_per_keepalive']:4.2f}x)"
        )


if __name__ == "__main__":
    main()
