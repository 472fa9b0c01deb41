"""`make bench`: every row of issue 13's target table in one run, written to docs/benchmarks.md.

    python -m bench.run [--scale 1.0] [--write docs/benchmarks.md] [--rows 1 3 …] [--no-baselines]

`--scale` multiplies every size (subscribers, burst, the sustained run's length); 1 is the
issue's sizes. Each row starts what it measures and its baselines itself (the bare asyncio
floor and django-eventstream from `bench.fanout` / `bench.eventstream_baseline`), in this run,
on this machine; a row that cannot be measured is written as "not measured: <why>". Verdicts
("met"/"missed") are computed from the figures below, never asserted anywhere else.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import functools
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.eventstream_baseline import DjangoEventstream
from bench.eventstream_baseline import versions as baseline_versions
from bench.fanout import (
    BENCH_ENV,
    ROOT,
    BareAsyncio,
    DashboardLiveChannel,
    MeetingDashStream,
    measure,
)


@dataclass
class Sizes:
    stream_ns: list[int] = field(default_factory=lambda: [1000, 3000])
    events: int = 10
    interval: float = 0.5
    dashboard: int = 1000
    sustained_n: int = 1000
    sustained_rate: float = 10.0
    sustained_seconds: float = 60.0
    stalled_normal: int = 200
    stalled: int = 200
    burst: int = 1000
    storm_pages: int = 1000
    storm_streams: int = 1000
    storm_events: int = 3
    widgets: int = 5000
    widget_events: int = 5
    widget_interval: float = 1.0
    redis_per_server: int = 1000
    redis_db: int = 13
    settle: float = 1.0  # seconds before sampling a server's RSS or CPU

    @classmethod
    def scaled(cls, scale: float) -> Sizes:
        full = cls()

        def n(value: int, least: int = 5) -> int:
            return max(least, round(value * scale))

        return cls(
            stream_ns=[n(v) for v in full.stream_ns],
            dashboard=n(full.dashboard),
            sustained_n=n(full.sustained_n),
            sustained_seconds=max(3.0, round(full.sustained_seconds * min(scale, 1.0))),
            stalled_normal=n(full.stalled_normal),
            stalled=n(full.stalled),
            burst=n(full.burst, 20),
            storm_pages=n(full.storm_pages),
            storm_streams=n(full.storm_streams),
            widgets=n(full.widgets),
            redis_per_server=n(full.redis_per_server),
        )

    @classmethod
    def tiny(cls) -> Sizes:
        """The smoke test's sizes: every scenario, a handful of clients, a couple of events."""
        return cls(
            stream_ns=[5],
            events=2,
            interval=0.1,
            dashboard=5,
            sustained_n=5,
            sustained_seconds=1.0,
            stalled_normal=5,
            stalled=5,
            burst=20,
            storm_pages=5,
            storm_streams=5,
            storm_events=2,
            widgets=5,
            widget_events=2,
            widget_interval=0.1,
            redis_per_server=5,
            settle=0.2,
        )


@dataclass
class Row:
    number: str
    title: str
    target: str
    figures: str = ""
    baselines: str = ""
    verdict: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return not self.verdict.startswith("not measured")


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _x(value: float, base: float) -> str:
    if not base or base != base:
        return "—"
    ratio = value / base
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×"


def _verdict(failures: list[str]) -> str:
    return "met" if not failures else "missed: " + "; ".join(failures)


def _fanout_figures(r: dict[str, Any], floor: dict[str, Any] | None = None) -> str:
    text = (
        f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, {r['cpu_us_per_delivery']:.0f} µs CPU"
        f"/delivery, {r['kb_per_subscriber']:.1f} KB/idle conn, lost {r['lost']}, "
        f"dup {r['duplicated']}"
    )
    if floor:
        text += (
            f" (p99 {_x(r['p99_ms'], floor['p99_ms'])} floor, CPU "
            f"{_x(r['cpu_us_per_delivery'], floor['cpu_us_per_delivery'])} floor)"
        )
    return text


SERVERS = ("daphne", "uvicorn")


class Bench:
    """The rows on one server (`serve --server`, through MEETINGDASH_SERVER in the children's
    environment). `baselines` (the floor, django-eventstream) measured by an earlier Bench of
    the same run are reused, not measured again."""

    def __init__(
        self,
        sizes: Sizes,
        baselines: bool,
        log: Callable[[str], None],
        server: str = "daphne",
        measured_baselines: dict[str, Any] | None = None,
    ) -> None:
        self.sizes = sizes
        self.baselines = baselines
        self.log = log
        self.server = server
        self.shared = {} if measured_baselines is None else measured_baselines
        self.results: dict[str, Any] = {}
        scenarios.SETTLE[0] = sizes.settle

    def baseline(self, key: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key not in self.shared:
            self.shared[key] = work()
        self.results[key] = self.shared[key]
        return self.shared[key]

    def attempt(self, row: Row, work: Callable[[Row], None]) -> Row:
        started = time.monotonic()
        try:
            work(row)
        except Exception as exc:  # noqa: BLE001 - a row that fails is reported, not fatal
            why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
            row.verdict = f"not measured: {type(exc).__name__}: {why}"
            self.log(traceback.format_exc())
        row.data["seconds"] = round(time.monotonic() - started, 1)
        self.log(f"{self.server} row {row.number}: {row.verdict} ({row.data['seconds']} s)")
        return row

    # 1. our stream beside the floor
    def stream_row(self, n: int, letter: str) -> Row:
        target = "p99 ≤ 2.5 × floor p99; CPU ≤ 60 µs/delivery; ≤ 16 KB/idle conn; 0 lost"
        row = Row(f"1{letter}", f"our stream, {n:,} subscribers, one process", target)

        def work(row: Row) -> None:
            s = self.sizes
            floor = self.baseline(
                f"floor/{n}", lambda: measure(BareAsyncio(), n, s.events, s.interval, s.settle)
            )
            ours = measure(MeetingDashStream(), n, s.events, s.interval, s.settle)
            self.results[f"stream/{n}"] = ours
            row.data.update(floor=floor, ours=ours)
            row.figures = _fanout_figures(ours, floor)
            row.baselines = "bare asyncio floor: " + _fanout_figures(floor)
            failures = []
            if ours["p99_ms"] > 2.5 * floor["p99_ms"]:
                failures.append(f"p99 {_x(ours['p99_ms'], floor['p99_ms'])} floor > 2.5×")
            if ours["cpu_us_per_delivery"] > 60:
                failures.append(f"CPU {ours['cpu_us_per_delivery']:.0f} > 60 µs")
            if ours["kb_per_subscriber"] > 16:
                failures.append(f"{ours['kb_per_subscriber']:.1f} > 16 KB/conn")
            if ours["lost"] or ours["duplicated"]:
                failures.append(f"lost {ours['lost']}, dup {ours['duplicated']}")
            row.verdict = _verdict(failures)

        return self.attempt(row, work)

    # 2. django-eventstream beside our stream
    def eventstream_row(self, n: int, letter: str) -> Row:
        target = "ours lower p99, CPU and memory than django-eventstream (same run)"
        row = Row(f"2{letter}", f"vs django-eventstream 5.3 on daphne, {n:,} subscribers", target)

        def work(row: Row) -> None:
            if not self.baselines:
                raise RuntimeError("baselines off (--no-baselines)")
            s = self.sizes
            theirs = self.baseline(
                f"eventstream/{n}",
                lambda: measure(DjangoEventstream(), n, s.events, s.interval, s.settle),
            )
            ours = self.results.get(f"stream/{n}")
            if ours is None:
                raise RuntimeError(f"row 1 at {n} was not measured")
            row.data.update(ours=ours, theirs=theirs)
            row.figures = (
                f"ours: p99 {_ms(ours['p99_ms'])} ({_x(ours['p99_ms'], theirs['p99_ms'])}), "
                f"{ours['cpu_us_per_delivery']:.0f} µs "
                f"({_x(ours['cpu_us_per_delivery'], theirs['cpu_us_per_delivery'])}), "
                f"{ours['kb_per_subscriber']:.1f} KB/conn "
                f"({_x(ours['kb_per_subscriber'], theirs['kb_per_subscriber'])} theirs)"
            )
            row.baselines = "django-eventstream: " + _fanout_figures(theirs)
            failures = [
                f"{name} not lower"
                for name, key in (
                    ("p99", "p99_ms"),
                    ("CPU", "cpu_us_per_delivery"),
                    ("memory", "kb_per_subscriber"),
                )
                if ours[key] >= theirs[key]
            ]
            if theirs["lost"] or theirs["duplicated"]:
                row.figures += f"; theirs lost {theirs['lost']}, dup {theirs['duplicated']}"
            row.verdict = _verdict(failures)

        return self.attempt(row, work)

    # 3. the dashboard's live channel
    def dashboard_row(self) -> Row:
        n = self.sizes.dashboard
        target = "p99 ≤ 250 ms; CPU ≤ 100 µs/delivery; frames only as large as what changed"
        row = Row("3", f"dashboard live channel, {n:,} viewers of one session's page", target)

        def work(row: Row) -> None:
            s = self.sizes
            ours = measure(DashboardLiveChannel(), n, s.events, s.interval, s.settle)
            self.results["dashboard"] = ours
            floor = self.results.get(f"floor/{n}")
            stream = self.results.get(f"stream/{n}")
            row.data.update(ours=ours)
            row.figures = (
                _fanout_figures(ours, floor)
                + f"; {ours['bytes_per_delivery']:,.0f} bytes received per delivered frame; "
                f"{ours['failed_attempts']} connection attempts reset and retried"
            )
            parts = []
            if floor:
                parts.append(f"floor at {n}: p99 {_ms(floor['p99_ms'])}")
            if stream:
                parts.append(
                    f"our stream at {n}: p99 {_ms(stream['p99_ms'])}, "
                    f"{stream['bytes_per_delivery']:,.0f} bytes/delivery"
                )
            row.baselines = "; ".join(parts) or "—"
            failures = []
            if ours["p99_ms"] > 250:
                failures.append(f"p99 {_ms(ours['p99_ms'])} > 250 ms")
            if ours["cpu_us_per_delivery"] > 100:
                failures.append(f"CPU {ours['cpu_us_per_delivery']:.0f} > 100 µs")
            if ours["lost"] or ours["duplicated"]:
                failures.append(f"lost {ours['lost']}, dup {ours['duplicated']}")
            row.verdict = _verdict(failures) + " (frame size: reported, no numeric bound)"

        return self.attempt(row, work)

    # 4. sustained rate
    def sustained_row(self) -> Row:
        s = self.sizes
        target = "p99 ≤ 250 ms, no backlog growth, 0 lost"
        title = (
            f"sustained {s.sustained_rate:g} events/s × {s.sustained_n:,} subscribers "
            f"for {s.sustained_seconds:g} s"
        )
        row = Row("4", title, target)

        def work(row: Row) -> None:
            load = (s.sustained_n, s.sustained_rate, s.sustained_seconds)
            r = scenarios.sustained(MeetingDashStream(), *load)
            self.results["sustained"] = r
            row.data.update(r)
            floor = self.baseline(
                "sustained/floor", lambda: scenarios.sustained(BareAsyncio(), *load)
            )
            row.data["floor"] = floor
            queue = "not sampled" if r["write_queue_max"] is None else f"{r['write_queue_max']:g}"
            row.figures = (
                f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, lost {r['lost']}, dup "
                f"{r['duplicated']}; p50 first {r['window_s']:g} s {_ms(r['first_p50_ms'])} vs last "
                f"{_ms(r['last_p50_ms'])}; relay write queue max {queue}; published at "
                f"{r['achieved_rate']:.1f}/s; {r['cpu_us_per_delivery']:.0f} µs CPU/delivery"
            )
            row.baselines = (
                f"bare asyncio floor, same load: p50 {_ms(floor['p50_ms'])}, p99 "
                f"{_ms(floor['p99_ms'])}, lost {floor['lost']}; p50 first "
                f"{_ms(floor['first_p50_ms'])} vs last {_ms(floor['last_p50_ms'])}; "
                f"{floor['cpu_us_per_delivery']:.0f} µs CPU/delivery"
            )
            row.figures += f" (p99 {_x(r['p99_ms'], floor['p99_ms'])} floor)"
            grew = r["last_p50_ms"] > 1.5 * r["first_p50_ms"] + 10
            row.data["backlog_grew"] = grew
            failures = []
            if r["p99_ms"] > 250:
                failures.append(f"p99 {_ms(r['p99_ms'])} > 250 ms")
            if grew:
                failures.append("backlog grew (last-window p50 > 1.5 × first + 10 ms)")
            if r["lost"] or r["duplicated"]:
                failures.append(f"lost {r['lost']}, dup {r['duplicated']}")
            row.verdict = _verdict(failures)

        return self.attempt(row, work)

    # 5. stalled readers
    def stalled_row(self) -> Row:
        s = self.sizes
        target = (
            "server memory bounded (the bound stated); the others unaffected; stalled ones "
            "resynced or closed, never an unbounded buffer"
        )
        title = (
            f"stalled readers: {s.stalled} stop reading (SO_RCVBUF 4 KB) during a "
            f"{s.burst:,}-event burst (names padded to ~290 B), beside {s.stalled_normal} readers"
        )
        row = Row("5", title, target)

        def work(row: Row) -> None:
            r = scenarios.stalled(s.stalled_normal, s.stalled, s.burst)
            self.results["stalled"] = r
            row.data.update(r)
            growth = r["rss_peak_kb"] - r["rss_before_kb"]
            outcomes = r["outcomes"]
            metrics = ", ".join(
                f"{k.removeprefix('meetingdash_')} +{v:g}" for k, v in r["bound_metrics"].items()
            )
            row.figures = (
                f"server RSS {r['rss_before_kb'] / 1024:.0f} MB before, peak +{growth / 1024:.1f} MB, "
                f"+{(r['rss_after_burst_kb'] - r['rss_before_kb']) / 1024:.1f} MB after the burst, "
                f"+{(r['rss_after_drain_kb'] - r['rss_before_kb']) / 1024:.1f} MB after the stalled "
                f"read again (their unread backlog: {r['unread_kb'] / 1024:.1f} MB, of which the "
                f"kernel's send queues held {r['kernel_send_queue_kb'] / 1024:.1f} MB at the burst's "
                f"end); readers' p99 {_ms(r['p99_ms'])}, all delivered "
                f"{r['last_delivery_s']:.1f} s after the first publish (published at "
                f"{r['publish_rate']:.0f}/s), lost {r['lost']}; stalled: {outcomes['complete']} got every "
                f"event once, {outcomes['closed']} closed, {outcomes['incomplete']} incomplete"
                + (f"; {metrics}" if metrics else "")
            )
            row.baselines = (
                f"same burst, no stalled readers: readers' p99 {_ms(r['control_p99_ms'])}, all "
                f"delivered {r['control_last_delivery_s']:.1f} s after the first publish, "
                f"RSS peak +{r['control_rss_growth_kb'] / 1024:.1f} MB"
            )
            failures = []
            extra = growth - r["control_rss_growth_kb"]
            if extra > 0.5 * r["unread_kb"]:
                failures.append(
                    f"RSS grew {extra / 1024:.1f} MB beyond the control: over half the stalled "
                    "readers' unread bytes were buffered"
                )
            if r["p99_ms"] > 1.5 * r["control_p99_ms"] or r["lost"]:
                failures.append("readers affected (p99 > 1.5 × control, or lost)")
            if outcomes["incomplete"]:
                failures.append(f"{outcomes['incomplete']} stalled neither resynced nor closed")
            row.verdict = _verdict(failures) + (
                f" (server RSS bound in this run: peak +{growth / 1024:.1f} MB for {s.stalled} "
                f"stalled; the kernel's send queues held {r['kernel_send_queue_kb'] / 1024:.1f} MB)"
            )

        return self.attempt(row, work)

    # 6. reconnect storm
    def storm_row(self) -> Row:
        s = self.sizes
        target = (
            "all live again within 15 s, each resumed without a gap; connect cost per page stated"
        )
        title = (
            f"reconnect storm: {s.storm_pages:,} dashboard pages + {s.storm_streams:,} stream "
            "subscribers (Last-Event-ID) after a `serve` restart"
        )
        row = Row("6", title, target)

        def work(row: Row) -> None:
            r = scenarios.reconnect_storm(s.storm_pages, s.storm_streams, s.storm_events)
            self.results["storm"] = r
            row.data.update(r)
            pages, streams = r["pages_resumed"], r["streams_resumed"]
            row.figures = (
                f"all live {r['live_after_kill_s']:.1f} s after SIGTERM ({r['stop_s']:.1f} s to stop, "
                f"{r['live_after_spawn_s']:.1f} s after the new process started); resumed "
                f"without gap or duplicate: pages {pages['resumed']}/{s.storm_pages}, streams "
                f"{streams['resumed']}/{s.storm_streams}; server CPU per connect: page "
                f"{r['page_connect_cpu_us']:,.0f} µs, stream {r['stream_connect_cpu_us']:,.0f} µs, "
                f"{r['reconnect_cpu_us']:,.0f} µs per reconnect in the storm (the new process's "
                f"CPU less a start-up's); {r['failed_attempts']:,} attempts refused or reset"
            )
            row.baselines = "— (client backoff: the page's, random up to min(5 s, 0.5 s × 2ⁿ))"
            failures = []
            if r["live_after_kill_s"] > 15:
                failures.append(f"{r['live_after_kill_s']:.1f} s > 15 s")
            if pages["resumed"] < s.storm_pages or streams["resumed"] < s.storm_streams:
                failures.append(
                    f"gaps: pages {pages['gaps']}, streams {streams['gaps']}; duplicates: pages "
                    f"{pages['duplicates']}, streams {streams['duplicates']}"
                )
            row.verdict = _verdict(failures)

        return self.attempt(row, work)

    # 7. widgets
    def widget_rows(self) -> list[Row]:
        """The issue's size; if it cannot be measured, also a fifth of it (marked as such)."""
        rows = [self.widget_row(self.sizes.widgets, "7")]
        smaller = self.sizes.widgets // 5
        if not rows[0].measured and smaller >= 5:
            rows.append(self.widget_row(smaller, "7b"))
            rows[
                -1
            ].title += f" (smaller than the target's: {self.sizes.widgets:,} did not connect)"
        return rows

    def widget_row(self, n: int, number: str) -> Row:
        s = self.sizes
        target = "p99 ≤ 1 s, 0 lost updates of the final state"
        row = Row(number, f"widget: {n:,} embedded badges on one session", target)

        def work(row: Row) -> None:
            r = scenarios.widgets(n, s.widget_events, s.widget_interval)
            self.results[f"widgets/{n}"] = r
            row.data.update(r)
            row.figures = (
                f"state change → every badge: p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}; "
                f"final state missing at {r['final_missing']}; {r['connect_cpu_us']:,.0f} µs CPU "
                f"per widget connect (opened at up to {r['connect_rate']:g}/s: all connected in "
                f"{r['connect_s']:.0f} s, {r['retries']} retries after resets, "
                f"{r['listen_overflows']} listen-queue overflows), "
                f"{r['cpu_us_per_badge_update']:.0f} µs per badge update"
            )
            # The same number of bare-asyncio SSE subscribers and events: what the load client
            # and this machine allow at this size, whatever the server.
            floor = self.baseline(
                f"floor/{n}/{s.widget_events}",
                lambda: measure(BareAsyncio(), n, s.widget_events, s.widget_interval, s.settle),
            )
            row.data["floor"] = floor
            row.figures += f" (p99 {_x(r['p99_ms'], floor['p99_ms'])} floor)"
            row.baselines = f"bare asyncio floor at {n:,}: " + _fanout_figures(floor)
            failures = []
            if r["p99_ms"] > 1000:
                failures.append(f"p99 {_ms(r['p99_ms'])} > 1 s")
            if r["final_missing"]:
                failures.append(f"{r['final_missing']} badges missed the final state")
            row.verdict = _verdict(failures)

        return self.attempt(row, work)

    # 8. two processes on Redis
    def redis_row(self) -> Row:
        s = self.sizes
        n = s.redis_per_server
        target = "p99 ≤ 1.5 × the one-process row; CPU per delivery within 1.3 ×"
        row = Row("8", f"two `serve` processes on Redis, {n:,} subscribers each", target)

        def work(row: Row) -> None:
            r = scenarios.redis_two_processes(n, s.events, s.interval, s.redis_db)
            self.results["redis"] = r
            row.data.update(r)
            one = self.results.get(f"stream/{n}")
            row.figures = (
                f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, "
                f"{r['cpu_us_per_delivery']:.0f} µs CPU/delivery (both `serve`; "
                f"{r['cpu_us_per_delivery_with_relay']:.0f} with `runrelay`), lost {r['lost']}, "
                f"dup {r['duplicated']}"
            )
            if one is None:
                row.baselines = f"one-process row at {n} not measured in this run"
                row.verdict = f"not measured: no one-process row at {n} to compare with"
                return
            row.figures += (
                f" (p99 {_x(r['p99_ms'], one['p99_ms'])}, CPU "
                f"{_x(r['cpu_us_per_delivery'], one['cpu_us_per_delivery'])} one process)"
            )
            row.baselines = f"one process, in-memory layer, {n}: " + _fanout_figures(one)
            failures = []
            if r["p99_ms"] > 1.5 * one["p99_ms"]:
                failures.append(f"p99 {_x(r['p99_ms'], one['p99_ms'])} > 1.5×")
            if r["cpu_us_per_delivery"] > 1.3 * one["cpu_us_per_delivery"]:
                failures.append(
                    f"CPU {_x(r['cpu_us_per_delivery'], one['cpu_us_per_delivery'])} > 1.3×"
                )
            if r["lost"] or r["duplicated"]:
                failures.append(f"lost {r['lost']}, dup {r['duplicated']}")
            row.verdict = _verdict(failures)

        return self.attempt(row, work)

    def run(self, rows: set[int] | None = None, parallel: int = 1) -> list[Row]:
        """The rows in the issue's priority order (2, 3, 4 and 8 reuse row 1's figures).

        `parallel` > 1 runs the rows after row 1 that many at a time: for the smoke test,
        whose figures mean nothing; `make bench` runs one row at a time."""
        wanted = rows or set(range(1, 9))
        letters = "abcdefgh"
        out: list[Row] = []
        BENCH_ENV["MEETINGDASH_SERVER"] = self.server  # every `serve` child of the rows
        stream_ns = self.sizes.stream_ns
        if wanted & {1, 2, 3, 4, 8}:
            out += [self.stream_row(n, letters[i]) for i, n in enumerate(stream_ns)]
        steps: list[Callable[[], Row | list[Row]]] = []
        if 2 in wanted:
            steps += [
                functools.partial(self.eventstream_row, n, letters[i])
                for i, n in enumerate(stream_ns)
            ]
        numbered: dict[int, Callable[[], Row | list[Row]]] = {
            3: self.dashboard_row,
            4: self.sustained_row,
            5: self.stalled_row,
            6: self.storm_row,
            7: self.widget_rows,
            8: self.redis_row,
        }
        steps += [step for number, step in numbered.items() if number in wanted]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for done in pool.map(lambda step: step(), steps):
                out += done if isinstance(done, list) else [done]
        return out


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    found = {}
    names = ("Django", "channels", "daphne", "Twisted", "channels-redis", "httpx")
    for name in (*names, "uvicorn", "uvloop", "httptools"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **found,
    }


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| # | row | target | figures (this run) | baselines (same run) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = (row.number, row.title, row.target, row.figures or "—", row.baselines or "—")
        lines.append("| " + " | ".join(cell(x) for x in (*cells, f"**{row.verdict}**")) + " |")
    return lines


SECTION_TITLES = {
    "daphne": "`serve` on daphne (the default)",
    "uvicorn": "`serve --server uvicorn` (uvloop, httptools; the optional server)",
}


def report(
    sections: dict[str, list[Row]], sizes: Sizes, scale: float | None, seconds: float
) -> str:
    info = machine()
    theirs = baseline_versions()
    versions = ", ".join(
        f"{k} {info[k]}"
        for k in ("Django", "channels", "daphne", "Twisted", "uvicorn", "uvloop", "httptools")
    )
    baseline = ", ".join(f"{k} {v}" for k, v in theirs.items()) or "not built"
    size = f"`--scale {scale:g}`" if scale is not None else "custom sizes"
    lines = [
        "# Fan-out benchmarks (issue 13)",
        "",
        "Written by `make bench` (`python -m bench.run`); do not edit by hand. Every figure and",
        "every baseline below comes from this one run on this machine.",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; run took {seconds / 60:.1f} min at {size}",
        f"- Machine: {info['cores']} cores, {info['cpu']}, Linux {info['kernel']}",
        f"- MeetingDash: Python {info['python']}, {versions}, channels-redis {info['channels-redis']}",
        f"- django-eventstream baseline venv: {baseline}",
        "",
        "Method: loopback; the server under test, the upstream simulator and one load-client",
        "process (raw asyncio sockets, one regex per read; it answers WebSocket pings as a",
        "browser does) share the cores, so compare ratios, not absolutes; one run per row",
        "(expect ±20% noise). Latency is publish → receipt per subscriber and event",
        "(CLOCK_MONOTONIC); p50 is the median of all deliveries. CPU is the server's user+sys",
        "over the publish window divided by deliveries; memory is the server's RSS with the",
        "subscribers connected minus idle, per subscriber (kernel buffers excluded).",
        "MeetingDash's latency includes the upstream hop (simulator → relay) and the SQLite write",
        "before broadcast, which the floor and django-eventstream do not have. The baselines",
        "(the floor, django-eventstream on daphne) are measured once and shown in both sections.",
        "",
        "What limits each missed row, with the profiles behind it, and which server `serve`",
        "runs by default and why: [benchmark-profiles.md](benchmark-profiles.md) (by hand).",
        "",
    ]
    for server, rows in sections.items():
        lines += [f"## {SECTION_TITLES.get(server, server)}", "", *table(rows), ""]
    lines += [
        "Sizes: " + ", ".join(f"{k} {v}" for k, v in asdict(sizes).items()) + ".",
        "",
        "<details><summary>Raw figures (JSON)</summary>",
        "",
        "```json",
        json.dumps(
            {server: {row.number: row.data for row in rows} for server, rows in sections.items()},
            indent=1,
            default=str,
        ),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--rows", type=int, nargs="+", help="only these rows (1-8)")
    parser.add_argument("--no-baselines", action="store_true", help="skip django-eventstream")
    parser.add_argument(
        "--servers", nargs="+", choices=SERVERS, default=list(SERVERS), help="serve --server …"
    )
    args = parser.parse_args(argv)
    sizes = Sizes.scaled(args.scale)
    started = time.monotonic()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    measured_baselines: dict[str, Any] = {}
    sections = {
        server: Bench(sizes, not args.no_baselines, log, server, measured_baselines).run(
            set(args.rows) if args.rows else None
        )
        for server in args.servers
    }
    text = report(sections, sizes, args.scale, time.monotonic() - started)
    args.write.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
