"""The fault drill at small scale: every fault, one at a time, on a real scaled deployment
(private PostgreSQL, Redis and nginx; two `serve`, two `runrelay`, the simulator). `make
drill` runs the same at drill scale and prints the table (docs/reliability.md)."""

from __future__ import annotations

import pytest

from drill.run import run, table
from drill.services import ServiceMissing
from tests.support import service_missing

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_every_fault_is_survived_without_silent_loss(capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    try:
        rows = run(
            sessions=3,
            rate=3.0,
            fault_seconds=6.0,
            settle=3.0,
            stall_seconds=8.0,
            burst=150,
            out=lines.append,
        )
    except ServiceMissing as exc:
        service_missing(str(exc))
    report = table(rows)
    with capsys.disabled():
        print("\n" + report)
    failures = [row for row in rows if row.notes]
    details = [event for row in failures for event in row.lost_events]
    assert not failures, "\n".join([report, *lines, "lost:", *details])
    faults = {row.fault.split(" (")[0] for row in rows}
    for expected in (
        "kill -9 the relay with most leases",
        "Redis restart",
        "PostgreSQL restart",
        "kill -9 a serve",
        "upstream drops every stream",
        "upstream silent stall",
        "presence at the end = upstream's",
    ):
        assert expected in faults, f"the drill skipped {expected!r}"
    gaps_marked = sum(row.marked for row in rows)
    assert gaps_marked > 0, "faults that cut the upstream must have left gaps to mark"
