"""The fault drill. One scaled deployment (private PostgreSQL and Redis, the simulator as its
own process, two `serve` behind nginx, two `runrelay`), uniquely numbered joins and leaves
emitted at a steady rate, subscribers of our stream on each port and through nginx that
reconnect with Last-Event-ID (to the other port, or through nginx again). Faults one at a
time; after each, the books are balanced:

- emitted: joins/leaves the simulator emitted during the fault's window;
- stored: of those, stored as received (not inferred after a gap);
- lost: emitted, not stored. Each must fall inside a stored gap ("marked"); a loss outside
  every gap fails the drill, and so does losing an event the simulator wrote to an open
  stream when no relay process was killed;
- duplicates: an emitted event stored twice;
- subscriber gaps / duplicates: stored events a subscriber never received between its
  first and last event, or received twice;
- recovery: from the fault to a probe event emitted afterwards reaching subscribers on both
  `serve` ports and through nginx.

At the end, who is present must agree with the simulator for every session.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from drill.services import PrivateNginx, PrivatePostgres, PrivateRedis
from drill.stack import ROOT, Deployment, Process, wait_until

STREAMED = ("status", "joined", "left", "close", "gap")
SHUTDOWN_BOUND = 15.0  # sessions_monitor.shutdown.SHUTDOWN_SECONDS
STALL_TIMEOUT = 4.0  # MEETINGDASH_UPSTREAM_STALL_SECONDS of drill.stack


# --- load ----------------------------------------------------------------------------------


@dataclass
class Emitted:
    session_id: str
    kind: str  # joined / left
    name: str
    at: float  # wall clock
    sim_seq: int


class Emitter:
    """Uniquely named joins and leaves, round robin over the sessions, at `rate` per second."""

    def __init__(self, deployment: Deployment, sessions: list[str], rate: float) -> None:
        self.deployment = deployment
        self.sessions = sessions
        self.rate = rate
        self.counter = itertools.count(1)
        self.present: dict[str, list[str]] = {sid: [] for sid in sessions}
        self.log: list[Emitted] = []
        self.lock = threading.Lock()
        self.emitting = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def emit_one(self, session_id: str, *, force_join: bool = False) -> Emitted | None:
        with self.emitting:  # the emitter thread and the drill's probes
            return self._emit(session_id, force_join)

    def _emit(self, session_id: str, force_join: bool) -> Emitted | None:
        present = self.present[session_id]
        if force_join or len(present) < 3 or random.random() < 0.5:
            kind, name = "joined", f"p{next(self.counter):05d}"
            step = {"join": name}
        else:
            kind, name = "left", present.pop(0)
            step = {"leave": name}
        try:
            answer = self.deployment.control("POST", f"/_control/sessions/{session_id}/emit", step)
        except httpx.HTTPError:
            self.errors += 1
            if kind == "left":
                present.insert(0, name)
            return None
        if kind == "joined":
            present.append(name)
        emitted = Emitted(session_id, kind, name, time.time(), int(answer["events"][-1]["seq"]))
        with self.lock:
            self.log.append(emitted)
        return emitted

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sessions = itertools.cycle(self.sessions)
        while not self._stop.wait(1 / self.rate):
            self.emit_one(next(sessions))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def burst(self, count: int) -> None:
        sessions = itertools.cycle(self.sessions)
        for _ in range(count):
            self.emit_one(next(sessions))


class Subscriber:
    """Our stream for one session, reconnecting with Last-Event-ID along `urls` in turn."""

    def __init__(self, name: str, urls: list[str], session_id: str, auth: dict[str, str]) -> None:
        self.name = name
        self.urls = urls
        self.session_id = session_id
        self.auth = auth
        self.received: list[tuple[int, str, dict[str, Any], float]] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._response: httpx.Response | None = None

    def start(self) -> None:
        self._thread.start()

    def last_id(self) -> int | None:
        return self.received[-1][0] if self.received else None

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            url = self.urls[turn % len(self.urls)]
            headers = dict(self.auth)
            if self.last_id() is not None:
                headers["Last-Event-ID"] = str(self.last_id())
            with contextlib.suppress(Exception):  # any failure: reconnect, like a browser
                self._read(url, headers)
            if self._stop.is_set():
                return
            self.reconnects += 1
            turn += 1
            time.sleep(0.2)

    def _read(self, url: str, headers: dict[str, str]) -> None:
        timeout = httpx.Timeout(10.0, read=6.0)  # keepalive 1 s: 6 s of silence is a dead link
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream(
                "GET", f"{url}/v1/meeting-buddy/sessions/{self.session_id}/stream", headers=headers
            ) as response,
        ):
            if response.status_code != 200:
                return
            self._response = response
            event: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if "data" in event and "id" in event:
                        self.received.append(
                            (
                                int(event["id"]),
                                event.get("event", ""),
                                json.loads(event["data"]),
                                time.time(),
                            )
                        )
                        if event.get("event") == "close":
                            self._stop.set()
                            return
                    event = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    event[key] = value

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            if self._response is not None:
                self._response.close()
        self._thread.join(10)


# --- the books --------------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    emitted: int = 0
    stored: int = 0
    lost: int = 0
    marked: int = 0
    duplicates: int = 0
    delivered_lost: int = 0
    subscriber_gaps: int = 0
    subscriber_duplicates: int = 0
    gaps: int = 0
    recovery: float = 0.0
    notes: list[str] = field(default_factory=list)
    lost_events: list[str] = field(default_factory=list)

    def failed(self, connection_cut: bool) -> list[str]:
        problems = []
        if self.lost > self.marked:
            problems.append(f"{self.lost - self.marked} lost events not covered by a gap")
        if self.delivered_lost and not connection_cut:
            problems.append(f"{self.delivered_lost} events the upstream delivered were lost")
        if self.duplicates:
            problems.append(f"{self.duplicates} events stored twice")
        if self.subscriber_gaps:
            problems.append(f"subscribers missed {self.subscriber_gaps} stored events")
        if self.subscriber_duplicates:
            problems.append(f"subscribers received {self.subscriber_duplicates} events twice")
        return problems


def stored_rows(deployment: Deployment) -> list[tuple[str, int, str, str, str, Any, Any]]:
    return deployment.query(
        "SELECT session_id, seq, kind, participant_name, note, gap_started_at, received_at"
        " FROM sessions_monitor_sessionevent ORDER BY session_id, seq"
    )


def balance(
    row: Row,
    emitted: list[Emitted],
    rows: list[tuple[str, int, str, str, str, Any, Any]],
    delivered: dict[str, set[int]],
    subscribers: list[Subscriber],
) -> None:
    received_as_sent: Counter[tuple[str, str, str]] = Counter()
    gaps: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    for session_id, _seq, kind, name, note, gap_from, received_at in rows:
        if kind in ("joined", "left") and "after a gap" not in note:
            received_as_sent[(session_id, kind, name)] += 1
        if kind == "gap":
            start = gap_from.timestamp() if gap_from is not None else 0.0
            gaps[session_id].append((start - 0.5, received_at.timestamp() + 0.5))
    row.emitted = len(emitted)
    window = (min((e.at for e in emitted), default=0), max((e.at for e in emitted), default=0))
    row.gaps = sum(
        1
        for spans in gaps.values()
        for start, end in spans
        if end >= window[0] and start <= window[1] + 60
    )
    for event in emitted:
        count = received_as_sent[(event.session_id, event.kind, event.name)]
        if count:
            row.stored += 1
            row.duplicates += count - 1
            continue
        row.lost += 1
        marked = any(start <= event.at <= end for start, end in gaps[event.session_id])
        row.marked += marked
        was_delivered = event.sim_seq in delivered.get(event.session_id, set())
        row.delivered_lost += was_delivered
        row.lost_events.append(
            f"{event.session_id} {event.kind} {event.name} at {event.at:.2f} "
            f"(sim seq {event.sim_seq}{', delivered' if was_delivered else ''}"
            f"{', in a gap' if marked else ''}); gaps {gaps[event.session_id]}"
        )
    streamed: defaultdict[str, list[int]] = defaultdict(list)
    for session_id, seq, kind, *_ in rows:
        if kind in STREAMED:
            streamed[session_id].append(seq)
    for subscriber in subscribers:
        ids = [received[0] for received in subscriber.received]
        if not ids:
            continue
        row.subscriber_duplicates += len(ids) - len(set(ids))
        expected = [seq for seq in streamed[subscriber.session_id] if ids[0] <= seq <= ids[-1]]
        row.subscriber_gaps += len(set(expected) - set(ids))


# --- faults ----------------------------------------------------------------------------------


@dataclass
class Drill:
    deployment: Deployment
    redis: PrivateRedis
    postgres: PrivatePostgres
    nginx: PrivateNginx
    sessions: list[str]
    emitter: Emitter
    subscribers: list[Subscriber]
    settle: float
    stall_seconds: float
    burst: int
    probe_session: str | None = None

    def faults(self) -> list[tuple[str, Callable[[], None], bool]]:
        """(name, inject, whether it cuts a relay's upstream connection: then events written
        to that connection may be lost without anyone's fault, and must be in a gap)."""
        return [
            ("kill -9 the relay with most leases", self.kill_busiest_relay, True),
            ("Redis restart (2 s down)", lambda: self.redis.restart(2.0), False),
            ("PostgreSQL restart (2 s down)", lambda: self.postgres.restart(2.0), False),
            ("kill -9 a serve", self.kill_a_web, False),
            ("upstream drops every stream", self.drop_streams, True),
            (f"upstream silent stall ({self.stall_seconds:g} s)", self.stall_streams, True),
            (f"burst of {self.burst} events", lambda: self.emitter.burst(self.burst), False),
        ]

    def kill_busiest_relay(self) -> None:
        leases = self.deployment.lease_owners()
        owners = Counter(leases.values())
        relays = self.deployment.relays
        victim = max(relays, key=lambda relay: owners.get(self.deployment.relay_owner(relay), 0))
        owned = [
            sid for sid, owner in leases.items() if owner == self.deployment.relay_owner(victim)
        ]
        # Recovery is measured on a session the victim streamed.
        self.probe_session = owned[0] if owned else self.sessions[0]
        victim.kill()
        self.restart_later(victim, ready="running")

    def kill_a_web(self) -> None:
        victim = self.deployment.webs[0]
        victim.kill()
        self.restart_later(victim)

    def restart_later(self, process: Process, ready: str | None = None) -> None:
        """Back after `settle` seconds, so the fault is survived by the others first."""

        def restart() -> None:
            time.sleep(self.settle)
            process.start(ready=ready)

        threading.Thread(target=restart, daemon=True).start()

    def drop_streams(self) -> None:
        self.deployment.control(
            "POST", "/_control/faults", {"drop_after_events": 1, "drop_times": len(self.sessions)}
        )

    def stall_streams(self) -> None:
        self.deployment.control(
            "POST",
            "/_control/faults",
            {"stall": {"seconds": self.stall_seconds, "keepalives": False}},
        )

    def probe(self, started: float, seconds: float) -> float:
        """Time from `started` until a join emitted now reaches every subscriber kind."""
        session_id, self.probe_session = self.probe_session or self.sessions[0], None
        emitted = None
        deadline = time.monotonic() + seconds
        while emitted is None and time.monotonic() < deadline:
            emitted = self.emitter.emit_one(session_id, force_join=True)
            if emitted is None:
                time.sleep(0.2)
        assert emitted is not None, "the simulator stopped answering"
        watchers = [s for s in self.subscribers if s.session_id == session_id]

        def everyone_has_it() -> bool:
            return all(
                any(data.get("participant_name") == emitted.name for _, _, data, _ in s.received)
                for s in watchers
            )

        wait_until(everyone_has_it, seconds, f"probe {emitted.name} to reach every subscriber")
        arrival = max(
            at
            for s in watchers
            for _, _, data, at in s.received
            if data.get("participant_name") == emitted.name
        )
        return arrival - started

    def wait_all_live(self, seconds: float = 90) -> None:
        """Until every session's upstream link is live again: a reconnect still in its
        backoff has not stored its gap yet, and the books would be balanced too early."""

        def all_live() -> bool:
            states = self.deployment.query(
                "SELECT stream_state FROM sessions_monitor_meetingsession WHERE session_id = ANY(%s)",
                self.sessions,
            )
            return len(states) == len(self.sessions) and all(s == "live" for (s,) in states)

        wait_until(all_live, seconds, "every upstream link to be live again", interval=0.3)

    def wait_quiet(self, quiet: float, seconds: float = 90) -> None:
        """Until no gap has been stored for `quiet` seconds: a fault's aftermath (a
        connection still stalled, a relay still taking over) must not spill into the next."""
        deadline = time.monotonic() + seconds
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.deployment.query(
                "SELECT count(*) FROM sessions_monitor_sessionevent WHERE kind = 'gap'"
            )[0][0]
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.5)

    def wait_healthy(self, seconds: float) -> None:
        def healthy() -> bool:
            return all(
                process.alive() for process in [*self.deployment.webs, *self.deployment.relays]
            ) and all(self.deployment.health(web).get("ok") for web in self.deployment.webs)

        wait_until(healthy, seconds, "every process to be back and healthy", interval=0.5)


def run(
    *,
    sessions: int,
    rate: float,
    fault_seconds: float,
    settle: float,
    stall_seconds: float,
    burst: int,
    only: list[str] | None = None,
    verbose: bool = False,
    out: Callable[[str], None] = print,
) -> list[Row]:
    redis, postgres = PrivateRedis(), PrivatePostgres()
    redis.start()
    postgres.start()
    stack = Deployment(
        database_url=postgres.url,
        redis_url=redis.url,
        extra_env={"MEETINGDASH_PROXY_HEADERS": "1"},
    )
    nginx = PrivateNginx(
        (ROOT / "docs" / "nginx.conf").read_text(), [w.port or 0 for w in stack.webs]
    )
    rows: list[Row] = []
    subscribers: list[Subscriber] = []
    try:
        nginx.start()
        stack.start()
        session_ids = [f"mbsess_drill{n:03d}" for n in range(sessions)]
        for session_id in session_ids:
            stack.control("POST", "/_control/sessions", {"session_id": session_id, "manual": True})
            stack.control("POST", f"/_control/sessions/{session_id}/emit", {"status": "recording"})
        a, b = (f"http://127.0.0.1:{web.port}" for web in stack.webs)
        for session_id in session_ids:
            for name, urls in (("A", [a, b]), ("B", [b, a]), ("nginx", [nginx.url])):
                subscribers.append(Subscriber(name, urls, session_id, stack.auth))
        wait_until(
            lambda: len(stack.lease_owners()) == sessions, 60, "every session to be streamed"
        )
        for subscriber in subscribers:
            subscriber.start()
        emitter = Emitter(stack, session_ids, rate)
        drill = Drill(
            stack,
            redis,
            postgres,
            nginx,
            session_ids,
            emitter,
            subscribers,
            settle,
            stall_seconds,
            burst,
        )
        drill.wait_healthy(60)
        drill.probe(time.time(), 30)
        out(
            f"drill: {sessions} sessions, {rate:g} events/s, {len(subscribers)} subscribers, "
            f"{len(stack.webs)} serve behind nginx, {len(stack.relays)} runrelay"
        )
        for name, inject, cuts_connections in drill.faults():
            if only and not any(word in name for word in only):
                continue
            row = Row(name)
            begin = len(emitter.log)
            emitter.start()
            time.sleep(fault_seconds / 2)
            started = time.time()
            inject()
            row.recovery = drill.probe(started, 90)
            time.sleep(fault_seconds / 2)
            emitter.stop()
            stack.control("DELETE", "/_control/faults")
            drill.wait_healthy(90)
            drill.wait_all_live()
            # A stalled connection may stall on after the fault is cleared (the simulator
            # sleeps out its stall), and its replacement is one more gap, noticed only a stall
            # timeout later: wait it out before counting, or what that replacement missed
            # looks lost without a gap when it is only not yet marked.
            drill.wait_quiet(quiet=STALL_TIMEOUT + settle)
            drill.wait_all_live()
            wait_until(lambda: stack.write_queues() == 0, 60, "relays to store what they hold")
            row_window = emitter.log[begin:]
            time.sleep(settle)  # let everything emitted be stored and delivered
            delivered = {
                sid: set(seqs)
                for sid, seqs in stack.control("GET", "/_control/stats")["delivered"].items()
            }
            balance(row, row_window, stored_rows(stack), delivered, subscribers)
            problems = row.failed(cuts_connections)
            row.notes = problems
            rows.append(row)
            out(format_row(row))
            if verbose:
                for line in row.lost_events:
                    out("    lost: " + line)
        presence_problems = check_presence(stack, emitter)
        rows.append(Row("presence at the end = upstream's", notes=presence_problems))
        out(format_row(rows[-1]))
        # The hardest shutdown: the database and Redis are both gone.
        redis.stop()
        postgres.stop()
        exits = stack.stop()
        slowest = max(exits.values())
        slow = [f"{name}: {t:.1f} s" for name, t in exits.items() if t > SHUTDOWN_BOUND]
        rows.append(
            Row(
                f"SIGTERM with Redis and PostgreSQL down (bound {SHUTDOWN_BOUND:g} s)",
                recovery=slowest,
                notes=slow,
            )
        )
        out(format_row(rows[-1]))
        out("exit times: " + ", ".join(f"{name} {t:.1f} s" for name, t in exits.items()))
    finally:
        for subscriber in subscribers:
            subscriber.stop()
        stack.stop()
        nginx.close()
        redis.close()
        postgres.close()
    return rows


def check_presence(stack: Deployment, emitter: Emitter) -> list[str]:
    problems = []
    ours = defaultdict(set)
    for session_id, name in stack.query(
        "SELECT session_id, participant_name FROM sessions_monitor_presence WHERE left_at IS NULL"
    ):
        ours[session_id].add(name)
    for session_id in emitter.sessions:
        upstream = stack.control("GET", f"/v1/meeting-buddy/sessions/{session_id}")
        names = set(_names(upstream.get("current_participants")))
        if names != ours[session_id]:
            problems.append(
                f"{session_id}: upstream {sorted(names)}, MeetingDash {sorted(ours[session_id])}"
            )
    return problems


def _names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        value = value.get("names") or value.get("participants") or []
    for item in value or []:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name.strip():
            yield name.strip()


HEADER = (
    "| fault | emitted | stored | lost | marked as gap | duplicates | subscriber gaps / dups "
    "| recovery s | result |\n|---|---|---|---|---|---|---|---|---|"
)


def format_row(row: Row) -> str:
    result = "ok" if not row.notes else "FAIL: " + "; ".join(row.notes)
    return (
        f"| {row.fault} | {row.emitted} | {row.stored} | {row.lost} | {row.marked} "
        f"| {row.duplicates} | {row.subscriber_gaps} / {row.subscriber_duplicates} "
        f"| {row.recovery:.2f} | {result} |"
    )


def table(rows: list[Row]) -> str:
    return "\n".join([HEADER, *(format_row(row) for row in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5.0, help="events per second, all sessions")
    parser.add_argument("--fault-seconds", type=float, default=12.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--stall-seconds", type=float, default=8.0)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--only", nargs="*", help="run only faults whose name has these words")
    parser.add_argument("--verbose", action="store_true", help="list every lost event")
    parser.add_argument("--write", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    rows = run(
        sessions=args.sessions,
        rate=args.rate,
        fault_seconds=args.fault_seconds,
        settle=args.settle,
        stall_seconds=args.stall_seconds,
        burst=args.burst,
        only=args.only,
        verbose=args.verbose,
    )
    text = table(rows)
    print("\n" + text)
    if args.write:
        args.write.write_text(f"Drill of {started:%Y-%m-%d %H:%M} UTC\n\n{text}\n")
    failed = [row for row in rows if row.notes]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
