"""Admin at production size: 100k sessions, 1M events in PostgreSQL.

    .venv/bin/python bench/admin.py                 # create, seed, measure, drop
    .venv/bin/python bench/admin.py --keep          # keep the database for a rerun
    .venv/bin/python bench/admin.py --reuse --keep  # measure an existing seeded database

Creates a dedicated database (default `meetingdash_bench`) on the server named by
BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres), migrates it, seeds it
with COPY (psycopg 3), VACUUM ANALYZEs, then prints, for each admin page, the median response
time of several in-process requests (Django test client, a logged-in superuser) and the number
of SQL queries. Baselines measured in the same run: a plain COUNT(*) of the event table (what
every event-list page load would pay without the estimate) and the cheapest query possible.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLATFORMS = [("teams", 40), ("zoom", 35), ("google_meet", 20), ("webex", 5)]
STATUSES = [
    ("completed", 80),
    ("failed", 12),
    ("active", 3),
    ("recording", 2),
    ("joining", 1),
    ("waiting", 1),
    ("initializing", 1),
]
ERROR_CODES = [
    "MEETING_NOT_FOUND",
    "ADMISSION_TIMEOUT",
    "ADMISSION_DENIED",
    "JOIN_TIMEOUT",
    "BOT_REMOVED",
    "INTERNAL_ERROR",
]
TEAMS = ["Sales", "Support", "Standup", "Planning", "Retro", "Hiring", "Board", "Design"]
# 40 x 40 names: a given name turns up in ~300 of 100k sessions, a plausible spread.
FIRST = [
    "Alice",
    "Bob",
    "Carol",
    "Dave",
    "Erin",
    "Frank",
    "Grace",
    "Heidi",
    "Ivan",
    "Judy",
    "Karim",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Xenia",
    "Yusuf",
    "Zoe",
    "Anders",
    "Bea",
    "Chidi",
    "Dana",
    "Elif",
    "Femi",
    "Goran",
    "Hana",
    "Ines",
    "Jonas",
    "Kaito",
    "Leila",
    "Mira",
    "Niko",
]
LAST = [
    "Meyer",
    "Smith",
    "Garcia",
    "Kim",
    "Novak",
    "Rossi",
    "Okafor",
    "Tanaka",
    "Dubois",
    "Silva",
    "Nguyen",
    "Kowalski",
    "Jensen",
    "Haddad",
    "Ivanova",
    "Moreau",
    "Costa",
    "Fischer",
    "Ali",
    "Park",
    "Schmidt",
    "Lopez",
    "Murphy",
    "Sato",
    "Bauer",
    "Horvat",
    "Lindqvist",
    "Mensah",
    "Petrov",
    "Quispe",
    "Rahman",
    "Santos",
    "Tan",
    "Urban",
    "Vargas",
    "Weber",
    "Yilmaz",
    "Zhang",
    "Brown",
    "Chen",
]
HOSTS = {
    "teams": "teams.microsoft.com/l/meetup-join",
    "zoom": "zoom.us/j",
    "google_meet": "meet.google.com",
    "webex": "acme.webex.com/meet",
}
BIG_SESSION_EVENTS = 10_000
# The admin's prefix searches need these on PostgreSQL: the list migration 0003 creates.
SEARCH_INDEXES = importlib.import_module(
    "sessions_monitor.migrations.0003_admin_search_indexes"
).INDEXES


def search_indexes_present() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)",
            [[name for name, _, _ in SEARCH_INDEXES]],
        )
        return sorted(row[0] for row in cursor.fetchall())


def add_search_indexes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for name, table, expression in SEARCH_INDEXES:
            cursor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({expression})')
        cursor.execute("ANALYZE")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="timed requests per page (median)")
    parser.add_argument("--database", default="meetingdash_bench")
    parser.add_argument(
        "--server",
        default=os.getenv("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--reuse", action="store_true", help="measure an already seeded database")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--add-search-indexes",
        action="store_true",
        help="create the pattern-ops search indexes if missing (migration 0003 creates them; "
        "IF NOT EXISTS, so a no-op on a migrated database)",
    )
    return parser.parse_args()


def database_url(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def recreate_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meetingdash.settings")
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver localhost 127.0.0.1"
    # The admin as it runs in production (DEBUG off needs a key; any will do here).
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-admin-not-secret")
    os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()


# --- seeding -------------------------------------------------------------------------------------


def weighted(rng: random.Random, table: list[tuple[str, int]]) -> str:
    return rng.choices([name for name, _ in table], weights=[weight for _, weight in table])[0]


def copy_text(value: Any) -> str:
    if value is None:
        return r"\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value).replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


class RowFile:
    """Rows of one model as COPY text in a temp file (one COPY runs at a time per connection,
    and events must follow their sessions)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.fields = [f for f in model._meta.concrete_fields if f.name != "id"]
        self.defaults = {f.name: f.get_default() for f in self.fields}
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed in copy_into)
        self.rows = 0

    def add(self, values: dict[str, Any]) -> None:
        row = [
            copy_text(values.get(f.attname, values.get(f.name, self.defaults[f.name])))
            for f in self.fields
        ]
        self.file.write("\t".join(row) + "\n")
        self.rows += 1

    def copy_into(self, cursor: Any, chunk_chars: int = 4 << 20) -> None:
        columns = ", ".join(f'"{f.column}"' for f in self.fields)
        self.file.seek(0)
        with cursor.copy(f'COPY "{self.model._meta.db_table}" ({columns}) FROM STDIN') as copy:
            while chunk := self.file.read(chunk_chars):
                copy.write(chunk)
        self.file.close()


def events_per_session(sessions: int, events: int) -> Iterator[int]:
    """Session 0 is one very long meeting; the rest share the remaining events evenly."""
    big = min(BIG_SESSION_EVENTS, events // 2)
    base, remainder = divmod(events - big, max(sessions - 1, 1))
    yield big
    for index in range(1, sessions):
        yield base + (1 if index <= remainder else 0)


def seed(sessions: int, events: int, seed_value: int) -> dict[str, str]:
    from django.db import connection

    from sessions_monitor.models import MeetingSession, Presence, SessionEvent

    rng = random.Random(seed_value)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    samples: dict[str, str] = {}
    session_rows, event_rows = RowFile(MeetingSession), RowFile(SessionEvent)
    presence_rows = RowFile(Presence)
    for number, count in enumerate(events_per_session(sessions, events)):
        seed_session(rng, now, number, count, session_rows, event_rows, presence_rows)
    samples["rows"] = (
        f"{session_rows.rows:,} sessions, {event_rows.rows:,} events, "
        f"{presence_rows.rows:,} presences"
    )
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # the psycopg 3 cursor underneath
        for rows in (session_rows, event_rows, presence_rows):
            rows.copy_into(cursor)
    samples["big"] = session_id(0)
    samples["typical"] = session_id(sessions // 2)
    return samples


def session_id(number: int) -> str:
    return f"mbsess_bench{number:07d}"


def seed_session(
    rng: random.Random,
    now: dt.datetime,
    number: int,
    count: int,
    session_rows: RowFile,
    event_rows: RowFile,
    presence_rows: RowFile,
) -> None:
    sid = session_id(number)
    platform = weighted(rng, PLATFORMS)
    status = "completed" if number == 0 else weighted(rng, STATUSES)
    terminal = status in ("completed", "failed")
    started = now - dt.timedelta(seconds=rng.randint(600, 365 * 86400))
    length = dt.timedelta(minutes=rng.randint(5, 90) if number else 600)
    ended = started + length if terminal else None
    error_code = rng.choice(ERROR_CODES) if status == "failed" else ""
    phases = ["joining", "active"] + ([status] if status not in ("joining", "active") else [])
    phases = phases[:count]
    seq = 0
    span = length.total_seconds()
    slots = max(count, 1)

    def at(index: int) -> dt.datetime:
        return started + dt.timedelta(seconds=span * index / slots)

    for phase in phases:
        seq += 1
        moment = at(seq - 1)
        event_rows.add(
            {
                "session_id": sid,
                "seq": seq,
                "kind": "status",
                "status": phase,
                "error_code": error_code if phase == "failed" else "",
                "error_message": "Could not join" if phase == "failed" else "",
                "upstream_timestamp": moment,
                "received_at": moment + dt.timedelta(milliseconds=40),
                "raw": json.dumps({"session_id": sid, "status": phase}),
            }
        )
    present: list[tuple[str, dt.datetime, int]] = []
    peak = 0
    while seq < count:
        seq += 1
        moment = at(seq - 1)
        leave = present and (len(present) >= 8 or rng.random() < 0.45)
        if leave:
            name, joined, join_seq = present.pop(rng.randrange(len(present)))
            presence_rows.add(
                {
                    "session_id": sid,
                    "participant_name": name,
                    "joined_at": joined,
                    "left_at": moment,
                    "join_seq": join_seq,
                    "leave_seq": seq,
                }
            )
        else:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            present.append((name, moment, seq))
            peak = max(peak, len(present))
        event_rows.add(
            {
                "session_id": sid,
                "seq": seq,
                "kind": "left" if leave else "joined",
                "participant_name": name,
                "upstream_timestamp": moment,
                "received_at": moment + dt.timedelta(milliseconds=40),
            }
        )
    for name, joined, join_seq in present:
        presence_rows.add(
            {
                "session_id": sid,
                "participant_name": name,
                "joined_at": joined,
                "left_at": ended,
                "join_seq": join_seq,
                "leave_seq": None,
            }
        )
    last = at(max(count - 1, 0))
    session_rows.add(
        {
            "session_id": sid,
            "bot_name": f"{TEAMS[number % len(TEAMS)]} Bot {number % 997}",
            "meeting_link": f"https://{HOSTS[platform]}/{900_000_000 + number}",
            "platform": platform,
            "status": status,
            "previous_status": phases[-2] if len(phases) > 1 else "",
            "status_since": at(len(phases) - 1) if phases else started,
            "error_code": error_code,
            "error_message": "Could not join" if error_code else "",
            "failed_from_status": "active" if error_code else "",
            "started_at": started,
            "first_seen_at": started,
            "last_event_at": last,
            "ended_at": ended,
            "stream_state": "ended" if terminal else "live",
            "stream_state_since": last,
            "watched": not terminal,
            "last_seq": count,
            "participants_present": 0 if terminal else len(present),
            "peak_participants": peak,
            "raw": {},
        }
    )


# --- measuring -----------------------------------------------------------------------------------


def measure(client: Any, url: str, runs: int) -> tuple[float, float, int, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)  # warm: template and query caches, connection
    assert response.status_code == 200, (url, response.status_code)
    times = []
    queries = 0
    slowest = 0.0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
            times.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
        slowest = max(slowest, *(float(q["time"]) for q in captured.captured_queries))
    return statistics.median(times) * 1000, max(times) * 1000, queries, slowest * 1000


def timed_sql(sql: str, runs: int) -> float:
    from django.db import connection

    times = []
    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchall()
        for _ in range(runs):
            started = time.perf_counter()
            cursor.execute(sql)
            cursor.fetchall()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    args = parse_args()
    url = database_url(args.server, args.database)
    seeded = ""
    started = time.perf_counter()
    if not args.reuse:
        recreate_database(args.server, args.database)
    setup_django(url)
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    try:
        if not args.reuse:
            call_command("migrate", verbosity=0)
            info = seed(args.sessions, args.events, args.seed)
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
            seeded = f"seeded {info['rows']} in {time.perf_counter() - started:.0f} s (COPY + VACUUM ANALYZE)"
        if args.add_search_indexes:
            add_search_indexes()
        present = search_indexes_present()
        user, _ = User.objects.get_or_create(
            username="bench", defaults={"is_staff": True, "is_superuser": True}
        )
        client = Client()
        client.force_login(user)
        changelist = reverse("admin:sessions_monitor_meetingsession_changelist")
        events = reverse("admin:sessions_monitor_sessionevent_changelist")
        big, typical = session_id(0), session_id(args.sessions // 2)
        change = "admin:sessions_monitor_meetingsession_change"
        pages = [
            ("session list, unfiltered", changelist),
            (
                "session list, status=failed",
                f"{changelist}?{urlencode({'status__exact': 'failed'})}",
            ),
            (
                "session list, platform + error code + date",
                f"{changelist}?{urlencode({'platform__exact': 'zoom', 'error_code__exact': 'JOIN_TIMEOUT', 'started_at__gte': (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).isoformat()})}",
            ),
            ("session list, search bot name", f"{changelist}?{urlencode({'q': 'Retro Bot 42'})}"),
            ("session list, search session id", f"{changelist}?{urlencode({'q': typical})}"),
            (
                "session list, search participant",
                f"{changelist}?{urlencode({'q': 'Grace Tanaka'})}",
            ),
            ("session list, search name prefix (broad)", f"{changelist}?{urlencode({'q': 'Gr'})}"),
            ("session page, typical (~10 events)", reverse(change, args=[typical])),
            (f"session page, long ({BIG_SESSION_EVENTS:,} events)", reverse(change, args=[big])),
            ("event list, unfiltered (estimated count)", events),
            (
                "event list, one session",
                f"{events}?{urlencode({'session__session_id__exact': big})}",
            ),
        ]
        print(f"\nMeetingDash admin bench on PostgreSQL ({args.database})")
        if seeded:
            print(seeded)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sessions_monitor_meetingsession")
            session_count = cursor.fetchone()[0]
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE relname = 'sessions_monitor_sessionevent'"
            )
            event_estimate = cursor.fetchone()[0]
        note = " (added by --add-search-indexes)" if args.add_search_indexes else ""
        print(f"search pattern indexes present: {len(present)}/{len(SEARCH_INDEXES)}{note}")
        print(
            f"{session_count:,} sessions, ~{event_estimate:,} events; median of {args.runs} requests, DEBUG={os.getenv('DJANGO_DEBUG', '0')}\n"
        )
        print(
            f"{'page':48} {'median ms':>10} {'max ms':>8} {'queries':>8} {'slowest SQL ms':>15}  target"
        )
        for name, page_url in pages:
            median, worst, queries, slowest = measure(client, page_url, args.runs)
            verdict = "ok" if median < 300 else "OVER 300 ms"
            print(f"{name:48} {median:10.1f} {worst:8.1f} {queries:8d} {slowest:15.1f}  {verdict}")
        print("\nbaselines (same run):")
        print(
            f"{'  SELECT count(*) FROM sessionevent':48} {timed_sql('SELECT count(*) FROM sessions_monitor_sessionevent', args.runs):10.1f}"
        )
        print(f"{'  SELECT 1':48} {timed_sql('SELECT 1', args.runs):10.2f}")
    finally:
        connection.close()
        if not args.keep:
            drop_database(args.server, args.database)
            print(f"\ndropped {args.database} (use --keep to keep it)")


if __name__ == "__main__":
    main()
