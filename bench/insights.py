"""The Insights page at production size: 100k sessions over 30 days, 1M events, PostgreSQL.

    python -m bench.insights [--sessions 100000 --events 1000000] [--runs 20] [--keep]
    python -m bench.insights --reuse --keep --explain   # an already seeded database

Creates a private database (default `meetingdash_bench_insights`) on the server named by
DATABASE_URL (or BENCH_POSTGRES_URL; default postgres://postgres@127.0.0.1:5432/postgres),
migrates it, seeds it with COPY (psycopg 3) and VACUUM ANALYZEs it, then renders `/insights/`
(Django test client, a logged-in user) for 24 h, 7 days, 30 days and filtered, `--runs` times
each, and prints p50/p95 as a markdown table next to a baseline measured in the same run on
the same data: the session list page (`/`). Drops the database at the end unless `--keep`.

The data: sessions started uniformly over the last 30 days (more in working hours), the four
platforms, ~25 % failed with the simulator's error codes (`simulator/scenarios.py`
FAILURES, in its proportions), the rest completed but for ~2 % still running; bots that got in
have `in_meeting_at` 5 s – 3 min after the start; 10 events per session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.admin import (  # noqa: E402 (after the path)
    PLATFORMS,
    RowFile,
    database_url,
    drop_database,
    recreate_database,
    weighted,
)

TARGET_MS = 300.0
# Failure kinds of the simulator, with their weights; those after "active" got in first.
FAILED_AFTER_ACTIVE = {"removed", "meeting_ended", "audio"}
BOTS = ["Notetaker", "Sales Bot", "Support Scribe", "Standup Bot", "Hiring Panel", "Board Minutes"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20, help="timed requests per page")
    parser.add_argument("--database", default="meetingdash_bench_insights")
    parser.add_argument(
        "--server",
        default=os.getenv("BENCH_POSTGRES_URL")
        or (
            os.getenv("DATABASE_URL", "")
            if os.getenv("DATABASE_URL", "").startswith("postgres")
            else "postgres://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server URL (its database is only used to create and drop ours)",
    )
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--reuse", action="store_true", help="measure an already seeded database")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the 30 d queries")
    parser.add_argument("--seed", type=int, default=14)
    return parser.parse_args()


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meetingdash.settings")
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver localhost 127.0.0.1"
    # The pages need static file URLs without a collectstatic manifest: the development
    # static storage (the queries and templates are the production ones).
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()


# --- seeding ---------------------------------------------------------------------------------


def failure_kinds() -> list[tuple[str, int]]:
    from sessions_monitor.simulator.scenarios import FAILURES, KINDS

    return [(kind, round(weight * 1000)) for kind, weight in KINDS if kind in FAILURES]


def started_at(rng: random.Random, now: dt.datetime) -> dt.datetime:
    """Uniform over 30 days, twice as likely between 08:00 and 18:00 UTC."""
    while True:
        moment = now - dt.timedelta(seconds=rng.uniform(0, 30 * 86400))
        if 8 <= moment.hour < 18 or rng.random() < 0.5:
            return moment


def meeting_length(rng: random.Random) -> dt.timedelta:
    """Minutes in the meeting: mostly 5–60, some short, some long (up to 3 h)."""
    bucket = rng.random()
    if bucket < 0.1:
        minutes = rng.uniform(0.5, 5)
    elif bucket < 0.85:
        minutes = rng.uniform(5, 60)
    else:
        minutes = rng.uniform(60, 180)
    return dt.timedelta(minutes=minutes)


def seed(sessions: int, events: int, seed_value: int) -> str:
    from django.db import connection

    from sessions_monitor.models import MeetingSession, SessionEvent
    from sessions_monitor.simulator.scenarios import FAILURES

    rng = random.Random(seed_value)
    now = dt.datetime.now(dt.UTC)
    kinds = failure_kinds()
    per_session, extra = divmod(events, sessions)
    session_rows, event_rows = RowFile(MeetingSession), RowFile(SessionEvent)
    for number in range(sessions):
        sid = f"mbsess_ins{number:07d}"
        platform = weighted(rng, PLATFORMS)
        start = started_at(rng, now)
        roll = rng.random()
        kind = weighted(rng, kinds) if roll < 0.25 else ""
        in_at = None
        if not kind or kind in FAILED_AFTER_ACTIVE:
            in_at = start + dt.timedelta(seconds=rng.lognormvariate(3.2, 0.7))
        if kind:
            status, code = "failed", FAILURES[kind][0]
            ended = (in_at or start) + dt.timedelta(seconds=rng.uniform(5, 600))
        elif roll > 0.98 and in_at is not None:
            status, code, ended = "active", "", None
        else:
            status, code = "completed", ""
            ended = (in_at or start) + meeting_length(rng)
        if ended is not None and ended > now:
            status, code, ended = "active", "", None
        count = per_session + (1 if number < extra else 0)
        last = ended or now
        for seq in range(1, count + 1):
            moment = start + (last - start) * (seq / max(count, 1))
            event_rows.add(
                {
                    "session_id": sid,
                    "seq": seq,
                    "kind": "status" if seq in (1, 2, count) else ("joined" if seq % 2 else "left"),
                    "status": "joining" if seq == 1 else ("active" if seq == 2 else ""),
                    "participant_name": "" if seq in (1, 2, count) else f"Guest {seq // 2}",
                    "upstream_timestamp": moment,
                    "received_at": moment,
                }
            )
        session_rows.add(
            {
                "session_id": sid,
                "bot_name": BOTS[number % len(BOTS)],
                "meeting_link": f"https://zoom.us/j/{800_000_000 + number}",
                "platform": platform,
                "status": status,
                "status_since": ended or in_at or start,
                "error_code": code,
                "error_message": FAILURES[kind][1] if kind else "",
                "started_at": start,
                "first_seen_at": start,
                "last_event_at": last,
                "ended_at": ended,
                "in_meeting_at": in_at,
                "stream_state": "ended" if ended else "live",
                "stream_state_since": last,
                "watched": ended is None,
                "last_seq": count,
                "raw": {},
            }
        )
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # the psycopg 3 cursor underneath
        for rows in (session_rows, event_rows):
            rows.copy_into(cursor)
    return f"{session_rows.rows:,} sessions, {event_rows.rows:,} events"


# --- measuring -------------------------------------------------------------------------------


def measure(client: Any, url: str, runs: int) -> dict[str, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)  # warm: templates, connection, the database's caches
    assert response.status_code == 200, (url, response.status_code)
    times: list[float] = []
    queries = 0
    slowest = 0.0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
        slowest = max(slowest, *(float(q["time"]) * 1000 for q in captured.captured_queries))
    times.sort()
    p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
    return {"p50": statistics.median(times), "p95": p95, "queries": queries, "slowest": slowest}


def explain(params: dict[str, str]) -> None:
    """EXPLAIN ANALYZE of each aggregate behind one page (what to read when p95 is high)."""
    from django.db import connection
    from django.utils import timezone

    from sessions_monitor import insights

    query = insights.parse_query(params, timezone.now())
    captured: list[tuple[str, Any]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        insights.read_insights(query)
        insights.filter_choices()
    with connection.cursor() as cursor:
        for sql, sql_params in captured:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", sql_params)
            print("\n".join(row[0] for row in cursor.fetchall()), end="\n\n")


def pages() -> list[tuple[str, str, dict[str, str]]]:
    today = dt.datetime.now(dt.UTC).date()
    return [
        ("24 hours", "/insights/", {"range": "24h"}),
        ("7 days", "/insights/", {"range": "7d"}),
        ("30 days", "/insights/", {"range": "30d"}),
        ("30 days, platform=zoom", "/insights/", {"range": "30d", "platform": "zoom"}),
        (
            "30 days, error_code=JOIN_TIMEOUT",
            "/insights/",
            {"range": "30d", "error_code": "JOIN_TIMEOUT"},
        ),
        ("7 days, bot=Notetaker", "/insights/", {"range": "7d", "bot": "Notetaker"}),
        ("30 days, htmx partial", "/insights/", {"range": "30d", "_htmx": "1"}),
        (
            "custom 400 days (400 daily bars)",
            "/insights/",
            {
                "range": "custom",
                "from": f"{today - dt.timedelta(days=399):%Y-%m-%d}",
                "to": f"{today:%Y-%m-%d}",
            },
        ),
    ]


def main() -> None:
    args = parse_args()
    url = database_url(args.server, args.database)
    began = time.perf_counter()
    if not args.reuse:
        recreate_database(args.server, args.database)
    setup_django(url)
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    seeded = ""
    try:
        if not args.reuse:
            call_command("migrate", verbosity=0)
            rows = seed(args.sessions, args.events, args.seed)
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
            seeded = f"seeded {rows} in {time.perf_counter() - began:.0f} s (COPY + VACUUM ANALYZE)"
        user, _ = User.objects.get_or_create(username="bench-insights")
        client = Client()
        client.force_login(user)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sessions_monitor_meetingsession")
            session_count = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM sessions_monitor_sessionevent")
            event_count = cursor.fetchone()[0]
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        print(
            f"\n### Insights page (`python -m bench.insights`), {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
        )
        if seeded:
            print(seeded + "  ")
        print(
            f"PostgreSQL {version}, {session_count:,} sessions, {event_count:,} events; "
            f"{args.runs} renders per page (Django test client, in process, logged in, "
            f"DEBUG={os.getenv('DJANGO_DEBUG')}); target: p50 and p95 under {TARGET_MS:.0f} ms.\n"
        )
        print("| page | p50 ms | p95 ms | queries | slowest SQL ms | verdict |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for name, path, params in pages():
            headers = {"HX-Request": "true"} if params.pop("_htmx", "") else {}
            page_url = f"{path}?{urlencode(params)}"
            figures = measure(_with_headers(client, headers), page_url, args.runs)
            verdict = (
                "met" if figures["p95"] < TARGET_MS else f"**missed: p95 over {TARGET_MS:.0f} ms**"
            )
            print(
                f"| `/insights/` {name} | {figures['p50']:.1f} | {figures['p95']:.1f} | "
                f"{figures['queries']:.0f} | {figures['slowest']:.1f} | {verdict} |"
            )
        for name, page_url in (
            ("session list `/` (Live)", "/"),
            ("session list `/?filter=all`", "/?filter=all"),
        ):
            figures = measure(client, page_url, args.runs)
            print(
                f"| baseline: {name} | {figures['p50']:.1f} | {figures['p95']:.1f} | "
                f"{figures['queries']:.0f} | {figures['slowest']:.1f} | (same run, same data) |"
            )
        if args.explain:
            print("\nEXPLAIN ANALYZE, 30 days:\n")
            explain({"range": "30d"})
    finally:
        connection.close()
        if not args.keep:
            drop_database(args.server, args.database)
            print(f"\n(dropped {args.database}; use --keep to keep it)")


class _with_headers:
    """A test client that sends `headers` with every GET."""

    def __init__(self, client: Any, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def get(self, url: str) -> Any:
        return self.client.get(url, headers=self.headers)


if __name__ == "__main__":
    main()
