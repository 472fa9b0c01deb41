"""`make bench` keeps working: every scenario it runs, at tiny N, through the same code
(`bench.run.Bench` with `Sizes.tiny()`, three rows at a time after row 1), checked for
correctness only (every event delivered,
nothing lost or duplicated, a table row produced). No time is asserted.

The django-eventstream baseline needs its throwaway venv (`build/bench-venv`, built from PyPI
on first use, about half a minute, then reused). With MEETINGDASH_BENCH_BASELINES=0 that one
baseline row is skipped; every other scenario still runs. The report goes to a temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.run import SERVERS, Bench, Row, Sizes, report

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BASELINES = os.getenv("MEETINGDASH_BENCH_BASELINES", "1") != "0"


@pytest.fixture(scope="module", params=SERVERS)
def bench(request: pytest.FixtureRequest) -> Bench:
    return Bench(Sizes.tiny(), BASELINES, log=lambda message: None, server=request.param)


def check(row: Row) -> None:
    assert row.measured, row.verdict
    assert row.figures and row.verdict


def no_loss(result: dict) -> None:
    assert result["lost"] == 0 and result["duplicated"] == 0, result


def test_every_scenario_produces_its_row(bench: Bench, tmp_path: Path) -> None:
    sizes = bench.sizes
    rows = bench.run(parallel=3)

    by_number = {row.number: row for row in rows}
    expected = {"1a", "3", "4", "5", "6", "7", "8"} | ({"2a"} if BASELINES else set())
    assert expected <= set(by_number), sorted(by_number)
    for number in expected:
        check(by_number[number])
    if not BASELINES:
        assert not by_number["2a"].measured

    results = bench.results
    for key in ("floor/5", "stream/5", "dashboard", "sustained", "redis"):
        no_loss(results[key])
    if BASELINES:
        no_loss(results["eventstream/5"])

    assert results["sustained"]["events"] == int(sizes.sustained_rate * sizes.sustained_seconds)

    stalled = results["stalled"]
    no_loss(stalled)
    outcomes = stalled["outcomes"]
    assert outcomes["complete"] + outcomes["closed"] == sizes.stalled, outcomes
    assert outcomes["incomplete"] == 0, outcomes

    storm = results["storm"]
    assert storm["pages_resumed"]["resumed"] == sizes.storm_pages, storm
    assert storm["streams_resumed"]["resumed"] == sizes.storm_streams, storm

    assert results["widgets/5"]["final_missing"] == 0, results["widgets/5"]

    out = tmp_path / "benchmarks.md"
    out.write_text(report({bench.server: rows}, sizes, None, 1.0))
    text = out.read_text()
    for number in expected:
        assert f"| {number} |" in text
