"""Does an unauthenticated /healthz flood slow the pages down?

One `serve` (embedded relay and simulator, SQLite); the latency of a page (the login page)
is measured alone, then while 50 clients hammer /healthz as fast as they can. The same run
gives the baseline. /healthz runs its checks at most once a second per process and shares
the answer, so the flood should cost little.

    .venv/bin/python bench/healthz_flood.py [--clients 50] [--requests 40]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.dash import dash_env, prepare_database, serve  # noqa: E402
from tests.support import free_port  # noqa: E402


def page_latencies(url: str, count: int) -> list[float]:
    times = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


FLOOD = """
import asyncio, sys, time, httpx
url, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def main():
    done = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def hammer():
            nonlocal done
            while time.monotonic() < deadline:
                await client.get(url)
                done += 1
        await asyncio.gather(*(hammer() for _ in range(clients)))
    print(done / seconds)
asyncio.run(main())
"""


def flood(url: str, clients: int, seconds: float) -> subprocess.Popen[str]:
    """The flood in a process of its own: its work must not slow the measuring client."""
    return subprocess.Popen(
        [sys.executable, "-c", FLOOD, url, str(clients), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dash_env(Path(tmp) / "db.sqlite3", DJANGO_LOG_LEVEL="WARNING")
        prepare_database(env)
        port = free_port()
        with serve(env, port) as process:
            page = process.base_url + "/accounts/login/"
            page_latencies(page, 5)  # warm up
            alone = page_latencies(page, args.requests)
            flooding = flood(process.base_url + "/healthz", args.clients, 12.0)
            time.sleep(2)
            flooded = page_latencies(page, args.requests)
            out, _ = flooding.communicate(timeout=60)
            rate = float(out.strip() or 0)
    median_alone, median_flooded = statistics.median(alone), statistics.median(flooded)
    print(
        f"page median alone: {median_alone * 1000:.1f} ms (p90 {sorted(alone)[int(len(alone) * 0.9)] * 1000:.1f} ms)"
    )
    print(
        f"page median during a {args.clients}-client /healthz flood ({rate:.0f} healthz/s): "
        f"{median_flooded * 1000:.1f} ms (p90 {sorted(flooded)[int(len(flooded) * 0.9)] * 1000:.1f} ms)"
    )
    print(f"ratio flooded / alone: {median_flooded / median_alone:.2f}")


if __name__ == "__main__":
    main()
