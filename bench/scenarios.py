"""The issue's rows beyond one isolated fan-out (`fanout.measure`): sustained rate, stalled
readers, a reconnect storm after a restart, embedded widgets, two processes on Redis.

Each function starts what it measures (simulator, temp SQLite, `serve`), drives one load
client process (`fanout.LoadClient`) and returns its figures as a dict; `bench.run` turns
them into the table. Nothing here asserts a time: the verdicts are computed in `bench.run`.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from bench.fanout import (
    PAGE_HELLO,
    LoadClient,
    LoadConfig,
    MeetingDashStream,
    NotMeasured,
    SimulatedDeployment,
    child,
    cpu_seconds,
    deliveries,
    free_port,
    last_seq,
    listen_overflows,
    log_tail,
    metrics,
    process_cpu,
    rss_kb,
    send_queue_bytes,
    simulated_deployment,
    stream_request,
    warm_stream,
    ws_request,
)

HOST = "127.0.0.1"
# Seconds to let a server settle before sampling it (the smoke test shortens it).
SETTLE = [1.0]


def _stream_endpoint(d: SimulatedDeployment, token: str, port: int | None = None) -> tuple:
    port = port or d.port
    return (HOST, port, stream_request(port, d.session_id, token).decode("latin-1"))


def _counters(port: int, *prefixes: str) -> dict[str, float]:
    """The serve process's counters whose names start with one of `prefixes`."""
    try:
        values = metrics(port)
    except Exception:  # noqa: BLE001 - /metrics is an extra, not what is measured
        return {}
    return {k: v for k, v in values.items() if k.startswith(prefixes)}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


BOUND_METRICS = (
    "meetingdash_hub_resyncs",
    "meetingdash_stalled_clients_dropped",
    "meetingdash_send_waits",
)


# -- 4. sustained rate ------------------------------------------------------------------------


def sustained(target: Any, n: int, rate: float, seconds: float) -> dict[str, Any]:
    """`rate` events/s for `seconds` to n subscribers of `target` (a `fanout` target: our
    stream, or the floor as its baseline under the same load)."""
    ours = isinstance(target, MeetingDashStream)
    with target.start() as running:
        config = LoadConfig([(running.host, running.port, running.request.decode("latin-1"))], n)
        with LoadClient(config) as client:
            client.ready(n)
            time.sleep(SETTLE[0])
            before = _counters(running.port, *BOUND_METRICS) if ours else {}
            total = max(2, int(rate * seconds))
            published: dict[int, int] = {}
            queue: list[float] = []
            cpu_before = cpu_seconds(running.pid)
            start = time.monotonic()
            for k in range(1, total + 1):
                pause = start + (k - 1) / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                published[k] = time.monotonic_ns()
                running.publish(k)
                if ours and k % max(1, int(rate * 5)) == 0:
                    queue.extend(_counters(running.port, "meetingdash_db_write_queue").values())
            elapsed = time.monotonic() - start
            client.ask(f"WAIT {total} 30")
            cpu_after = cpu_seconds(running.pid)
            after = _counters(running.port, *BOUND_METRICS) if ours else {}
            receipts = client.results()
    result = deliveries(receipts, published)
    window = max(1, int(rate * min(10.0, seconds / 3)))  # the first and last 10 s
    first = [ms for k in range(1, window + 1) for ms in result["per_event"][k]]
    last = [ms for k in range(total - window + 1, total + 1) for ms in result["per_event"][k]]
    return {
        "n": n,
        "rate": rate,
        "seconds": seconds,
        "events": total,
        "achieved_rate": total / elapsed if elapsed else float("nan"),
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "lost": result["lost"],
        "duplicated": result["duplicated"],
        "first_p50_ms": statistics.median(first) if first else float("nan"),
        "last_p50_ms": statistics.median(last) if last else float("nan"),
        "window_s": window / rate,
        "write_queue_max": max(queue) if queue else None,
        "bound_metrics": _delta(after, before),
        "cpu_us_per_delivery": (cpu_after - cpu_before) * 1e6 / max(1, result["deliveries"]),
    }


# -- 5. stalled readers -----------------------------------------------------------------------


@contextlib.contextmanager
def _peak_rss(pid: int) -> Iterator[dict[str, int]]:
    peak = {"kb": rss_kb(pid)}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            with contextlib.suppress(OSError, RuntimeError):
                peak["kb"] = max(peak["kb"], rss_kb(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def _stalled_outcomes(receipts: list[dict[str, Any]], burst: int) -> dict[str, int]:
    outcome = {"complete": 0, "closed": 0, "incomplete": 0, "resync_notes": 0}
    for r in receipts:
        if not r["stalled"]:
            continue
        marks = {int(k): len(v) for k, v in r["m"].items()}
        outcome["resync_notes"] += bool(r["notes"])
        if r["e"]:
            outcome["closed"] += 1
        elif all(marks.get(k) == 1 for k in range(1, burst + 1)):
            outcome["complete"] += 1
        else:
            outcome["incomplete"] += 1
    return outcome


def stalled(
    normal: int, stalled_n: int, burst: int, rcvbuf: int = 4096, pad: int = 280
) -> dict[str, Any]:
    """A burst of `burst` events to `normal` readers beside `stalled_n` that stop reading
    (SO_RCVBUF `rcvbuf`, reading paused after the response head); then the stalled ones read
    again, and what they got is counted. A control run without stalled readers comes first.
    Each event's participant name is padded by `pad` bytes (names hold up to 300), so that a
    burst outgrows what the kernel's socket buffers absorb (~140 KB per connection here)."""
    control = _burst(normal, 0, burst, rcvbuf, pad)
    measured = _burst(normal, stalled_n, burst, rcvbuf, pad)
    measured["control_p99_ms"] = control["p99_ms"]
    measured["control_rss_growth_kb"] = control["rss_peak_kb"] - control["rss_before_kb"]
    measured["control_last_delivery_s"] = control["last_delivery_s"]
    return measured


def _burst(normal: int, stalled_n: int, burst: int, rcvbuf: int, pad: int) -> dict[str, Any]:
    with simulated_deployment("stalled") as d:
        token = d.credentials()["api"]
        with d.serve() as server:
            warm_stream(d.port, d.session_id, token)
            config = LoadConfig([_stream_endpoint(d, token)], normal, stalled=stalled_n)
            config.rcvbuf = rcvbuf
            with LoadClient(config) as client:
                client.ready(normal + stalled_n)
                time.sleep(SETTLE[0])
                before = _counters(d.port, *BOUND_METRICS)
                rss_before = rss_kb(server.pid)
                published: dict[int, int] = {}
                with _peak_rss(server.pid) as peak:
                    start = time.monotonic()
                    for k in range(1, burst + 1):
                        published[k] = time.monotonic_ns()
                        d.publish(k, pad)
                    publish_s = time.monotonic() - start
                    client.ask(f"WAIT {burst} 120")
                rss_after_burst = rss_kb(server.pid)
                kernel_queued = send_queue_bytes(d.port)
                drained = client.ask(f"DRAIN {burst} 60")
                rss_after_drain = rss_kb(server.pid)
                after = _counters(d.port, *BOUND_METRICS)
                receipts = client.results()
    result = deliveries(receipts, published)
    reading = [r for r in receipts if not r["stalled"]]
    frame_bytes = sum(r["bytes"] for r in reading) / max(1, result["deliveries"])
    return {
        "normal": normal,
        "stalled": stalled_n,
        "burst": burst,
        "rcvbuf": rcvbuf,
        "pad": pad,
        "publish_rate": burst / publish_s if publish_s else float("nan"),
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "lost": result["lost"],
        "duplicated": result["duplicated"],
        "rss_before_kb": rss_before,
        "rss_peak_kb": peak["kb"],
        "rss_after_burst_kb": rss_after_burst,
        "rss_after_drain_kb": rss_after_drain,
        "frame_bytes": frame_bytes,
        "kernel_send_queue_kb": kernel_queued / 1024,
        "last_delivery_s": max(
            (max(max(t) for t in r["m"].values()) for r in reading if r["m"]), default=0
        )
        / 1e9
        - published[1] / 1e9,
        "unread_kb": stalled_n * burst * frame_bytes / 1024,
        "outcomes": _stalled_outcomes(receipts, burst),
        "drained_all": drained["ok"],
        "bound_metrics": _delta(after, before),
    }


# -- 6. reconnect storm -----------------------------------------------------------------------


def _continuous(ids: list[int]) -> bool:
    return bool(ids) and sorted(set(ids)) == list(range(min(ids), max(ids) + 1)) == sorted(ids)


def _resumed(receipts: list[dict[str, Any]], events: int) -> dict[str, int]:
    ok = gaps = dups = 0
    for r in receipts:
        marks = {int(k): len(v) for k, v in r["m"].items()}
        missing = any(k not in marks for k in range(1, events + 1))
        duplicated = any(count > 1 for count in marks.values())
        continuous = _continuous(r["ids"])
        gaps += missing or not continuous
        dups += duplicated
        ok += not (missing or duplicated or not continuous)
    return {"resumed": ok, "gaps": gaps, "duplicates": dups}


def reconnect_storm(pages: int, streams: int, events: int = 3) -> dict[str, Any]:
    """`pages` dashboard pages and `streams` stream subscribers (Last-Event-ID) on one
    `serve`; `events` events; the process is restarted (SIGTERM, a new one on the same port);
    every client reconnects as a page does; `events` more events. Reported: time until all
    are live again, and whether each got every event exactly once with continuous ids."""
    with simulated_deployment("storm", watch=True) as d:
        credentials = d.credentials()
        token, key = credentials["api"], credentials["page"]
        ws_head = ws_request(d.port, f"/ws/sessions/{d.session_id}/", key).decode("latin-1")
        first: contextlib.AbstractContextManager[Any] = d.serve()
        server = first.__enter__()
        startup_cpu = cpu_seconds(server.pid)  # to /healthz: subtracted from the new process's
        try:
            d.wait_first_event()
            warm_stream(d.port, d.session_id, token)
            page_config = LoadConfig(
                [(HOST, d.port, ws_head)],
                pages,
                hello=PAGE_HELLO,
                after=last_seq(d.db_path, d.session_id),
                reconnect=True,
                ready_seconds=120,
            )
            stream_config = LoadConfig(
                [_stream_endpoint(d, token)],
                streams,
                last_event_id=True,
                reconnect=True,
                ready_seconds=120,
            )
            with contextlib.ExitStack() as clients:
                # Connect cost: the server's CPU while one kind connects, per connection
                # (the pages first, then the streams).
                cpu0 = cpu_seconds(server.pid)
                page_client = clients.enter_context(LoadClient(page_config))
                page_client.ready(pages)
                cpu1 = cpu_seconds(server.pid)
                sse = clients.enter_context(LoadClient(stream_config))
                sse.ready(streams)
                cpu2 = cpu_seconds(server.pid)
                for k in range(1, events + 1):
                    d.publish(k)
                    time.sleep(min(0.3, SETTLE[0]))
                for client in (page_client, sse):
                    if not client.ask(f"WAIT {events} 30")["ok"]:
                        raise NotMeasured("not every client had the events before the restart")
                killed = time.monotonic_ns()
                first.__exit__(None, None, None)
                stopped = time.monotonic_ns()
                # The new process is not waited for (its /healthz queues behind the storm):
                # the clients' LIVE answers say when everything is back.
                first = child(["manage.py", "serve", "--port", str(d.port)], d.env)
                server = first.__enter__()
                spawned = time.monotonic_ns()
                live = [client.ask("LIVE 2 120") for client in (page_client, sse)]
                cpu_live = cpu_seconds(server.pid)
                if not all(answer["ok"] for answer in live):
                    raise NotMeasured(
                        f"after the restart only {live[0]['live']} of {pages} pages and "
                        f"{live[1]['live']} of {streams} streams were live within 120 s"
                    )
                all_live = max(answer["last_connect_ns"] for answer in live)
                for k in range(events + 1, 2 * events + 1):
                    d.publish(k)
                    time.sleep(min(0.3, SETTLE[0]))
                waits = [client.ask(f"WAIT {2 * events} 30") for client in (page_client, sse)]
                page_receipts = page_client.results()
                stream_receipts = sse.results()
        finally:
            first.__exit__(None, None, None)
    return {
        "pages": pages,
        "streams": streams,
        "events": 2 * events,
        "stop_s": (stopped - killed) / 1e9,
        "live_after_kill_s": (all_live - killed) / 1e9,
        "live_after_spawn_s": (all_live - spawned) / 1e9,
        "page_connect_cpu_us": (cpu1 - cpu0) * 1e6 / max(1, pages),
        "stream_connect_cpu_us": (cpu2 - cpu1) * 1e6 / max(1, streams),
        "reconnect_cpu_us": (cpu_live - startup_cpu) * 1e6 / max(1, pages + streams),
        "all_delivered_after": all(w["ok"] for w in waits),
        "failed_attempts": sum(r["f"] for r in page_receipts + stream_receipts),
        "pages_resumed": _resumed(page_receipts, 2 * events),
        "streams_resumed": _resumed(stream_receipts, 2 * events),
    }


# -- 7. widgets -------------------------------------------------------------------------------


def widgets(
    n: int, events: int, interval: float = 1.0, connect_rate: float = 100.0
) -> dict[str, Any]:
    """n embedded badges (the widget websocket, a token from `embed.make_token`) on one
    session, connecting at `connect_rate` per second (pages loading, not a storm: that is
    row 6); `events` state changes (participant joins: the badge's count) `interval` apart."""
    with simulated_deployment("widget", watch=True) as d:
        token = d.credentials()["widget"]
        with d.serve() as server:
            d.wait_first_event()
            path = f"/ws/embed/sessions/{d.session_id}/?token={quote(token)}"
            config = LoadConfig(
                [(HOST, d.port, ws_request(d.port, path).decode("latin-1"))],
                n,
                mark="badge",
                # A badge whose connection is reset retries, as embed.js does.
                reconnect=True,
                ready_seconds=120,
                connect_rate=connect_rate,
            )
            with LoadClient(config) as client:
                cpu0, connecting = cpu_seconds(server.pid), time.monotonic()
                try:
                    client.ready(n)
                except NotMeasured as exc:
                    busy = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - connecting)
                    raise NotMeasured(f"{exc}; the server used {busy:.0%} of a core") from exc
                cpu1, connected_s = cpu_seconds(server.pid), time.monotonic() - connecting
                overflows = listen_overflows() - client.overflows
                time.sleep(SETTLE[0])
                published: dict[int, int] = {}
                for k in range(1, events + 1):
                    published[k] = time.monotonic_ns()
                    d.publish(k)
                    time.sleep(interval)
                client.ask(f"WAIT {events} 30")
                cpu2 = cpu_seconds(server.pid)
                receipts = client.results()
    result = deliveries(receipts, published, badge=True)
    final_missing = sum(1 for r in receipts if not any(int(state) >= events for state in r["m"]))
    return {
        "n": n,
        "events": events,
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "final_missing": final_missing,
        "connect_rate": connect_rate,
        "connect_s": connected_s,
        "retries": sum(r["f"] + r["c"] - 1 for r in receipts),
        "listen_overflows": overflows,
        "connect_cpu_us": (cpu1 - cpu0) * 1e6 / max(1, n),
        "cpu_us_per_badge_update": (cpu2 - cpu1) * 1e6 / max(1, n * events),
    }


# -- 8. two processes on Redis ----------------------------------------------------------------


def redis_two_processes(per_server: int, events: int, interval: float, db: int) -> dict[str, Any]:
    """Two `serve` processes and one `runrelay` on Redis db `db` (flushed first), SQLite,
    `per_server` stream subscribers on each; CPU is the three processes' together."""
    import redis

    url = f"redis://127.0.0.1:6379/{db}"
    try:
        redis.Redis.from_url(url, socket_timeout=2).flushdb()
    except redis.RedisError as exc:
        raise NotMeasured(f"Redis at {url} is unreachable: {type(exc).__name__}") from exc
    with simulated_deployment("redis", redis_url=url) as d:
        token = d.credentials()["api"]
        with child(["manage.py", "runrelay"], d.env) as relay:
            port2 = free_port()
            with d.serve() as one, d.serve(port2) as two:
                warm_stream(d.port, d.session_id, token)
                warm_stream(port2, d.session_id, token)
                if relay.poll() is not None:
                    raise NotMeasured(f"runrelay exited: {log_tail(relay)}")
                endpoints = [_stream_endpoint(d, token), _stream_endpoint(d, token, port2)]
                n = 2 * per_server
                with LoadClient(LoadConfig(endpoints, n)) as client:
                    client.ready(n)
                    time.sleep(SETTLE[0])
                    serves = (one.pid, two.pid)
                    cpu0, relay0 = process_cpu(serves), cpu_seconds(relay.pid)
                    published: dict[int, int] = {}
                    for k in range(1, events + 1):
                        published[k] = time.monotonic_ns()
                        d.publish(k)
                        time.sleep(interval)
                    client.ask(f"WAIT {events} 10")
                    cpu1, relay1 = process_cpu(serves), cpu_seconds(relay.pid)
                    receipts = client.results()
    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(url, socket_timeout=2).flushdb()
    result = deliveries(receipts, published)
    count = max(1, result["deliveries"])
    return {
        "per_server": per_server,
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "lost": result["lost"],
        "duplicated": result["duplicated"],
        "cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / count,
        "cpu_us_per_delivery_with_relay": (cpu1 - cpu0 + relay1 - relay0) * 1e6 / count,
    }


__all__ = ["reconnect_storm", "redis_two_processes", "stalled", "sustained", "widgets"]
