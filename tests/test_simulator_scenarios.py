"""Seeded scenario generation: determinism, realistic content, well-formed timelines."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessions_monitor.simulator.scenarios import (
    FAILURES,
    PLATFORMS,
    Scenario,
    detect_platform,
    generate_scenario,
    meeting_link_for,
    step_from_dict,
)

ORDER = ["initializing", "joining", "waiting", "active", "recording", "leaving", "completed"]


def scenario(seed: int, **kwargs: object) -> Scenario:
    return generate_scenario(random.Random(seed), **kwargs)  # type: ignore[arg-type]


def statuses(s: Scenario) -> list[str]:
    return [step.status for step in s.steps if step.status is not None]


def test_same_seed_same_scenario_different_seed_different() -> None:
    assert scenario(42) == scenario(42)
    assert len({scenario(seed) for seed in range(20)}) == 20


@given(st.integers(min_value=0, max_value=10**9))
@settings(max_examples=200, deadline=None)
def test_every_scenario_is_well_formed(seed: int) -> None:
    s = scenario(seed)
    assert s.platform in PLATFORMS
    assert detect_platform(s.meeting_link) == s.platform
    assert all(step.after >= 0 for step in s.steps)
    assert sum(1 for step in s.steps if step.status and step.status in ("completed", "failed")) == 1
    # the terminal step is the last one, and status changes follow the lifecycle order
    assert s.steps[-1].status in ("completed", "failed")
    path = [status for status in statuses(s) if status != "failed"]
    assert path == sorted(path, key=ORDER.index)
    assert len(set(path)) == len(path)
    if s.steps[-1].status == "failed":
        assert s.steps[-1].error_code and s.steps[-1].error_message
    else:
        assert path[-3:] == ["recording", "leaving", "completed"]
    # participants: nobody leaves who is not there, nobody joins twice without leaving
    present: set[str] = set()
    for step in s.steps:
        if step.join is not None:
            assert step.join not in present
            present.add(step.join)
        if step.leave is not None:
            assert step.leave in present
            present.remove(step.leave)
    if s.steps[-1].status == "completed":
        assert present == set(), "an ordinary meeting ends with everybody gone"


def test_participants_only_while_the_bot_is_in_the_meeting() -> None:
    for seed in range(300):
        s = scenario(seed)
        status = "initializing"
        for step in s.steps:
            if step.status:
                status = step.status
            elif step.join or step.leave:
                assert status == "recording", (seed, step)


def test_the_mix_covers_every_kind_platform_and_failure() -> None:
    scenarios = [scenario(seed) for seed in range(400)]
    kinds = Counter(s.kind for s in scenarios)
    assert set(kinds) == {"ordinary", "long", *FAILURES}
    assert kinds["ordinary"] > 100
    assert {s.platform for s in scenarios} == set(PLATFORMS)
    codes = {s.steps[-1].error_code for s in scenarios if s.steps[-1].status == "failed"}
    assert {"WAITING_ROOM_TIMEOUT", "REMOVED_BY_HOST", "INVALID_MEETING_LINK"} <= codes
    assert any("waiting" in statuses(s) and s.kind == "ordinary" for s in scenarios)
    assert any(s.duration > 900 for s in scenarios), "some long meetings"
    names = {step.join for s in scenarios for step in s.steps if step.join}
    assert any(not name.isascii() for name in names)
    assert {"Zoë Müller", "Łukasz Nowak", "José García", "李雷"} <= names
    joins_per_person = [Counter(step.join for step in s.steps if step.join) for s in scenarios]
    assert any(n > 1 for joins in joins_per_person for n in joins.values()), "rejoins happen"


def test_waiting_room_failure_is_the_documented_message() -> None:
    s = scenario(1, kind="waiting_room")
    assert statuses(s) == ["joining", "waiting", "failed"]
    assert s.steps[-1].error_code == "WAITING_ROOM_TIMEOUT"
    assert s.steps[-1].error_message == "Bot was not admitted from the waiting room"


@pytest.mark.parametrize(
    ("kind", "failed_after"),
    [
        ("launch_failed", "initializing"),
        ("invalid_link", "joining"),
        ("join_timeout", "joining"),
        ("audio", "active"),
        ("removed", "recording"),
        ("meeting_ended", "recording"),
    ],
)
def test_failures_happen_at_different_stages(kind: str, failed_after: str) -> None:
    path = ["initializing", *statuses(scenario(5, kind=kind))]
    assert path[-1] == "failed"
    assert path[-2] == failed_after


def test_fixed_fields_are_kept() -> None:
    s = scenario(3, platform="webex", meeting_link="https://acme.webex.com/meet/x", bot_name="B")
    assert (s.platform, s.meeting_link, s.bot_name) == (
        "webex",
        "https://acme.webex.com/meet/x",
        "B",
    )


@pytest.mark.parametrize(
    ("link", "platform"),
    [
        ("https://teams.microsoft.com/l/meetup-join/abc", "teams"),
        ("https://us02web.zoom.us/j/123", "zoom"),
        ("https://meet.google.com/abc-defg-hij", "google_meet"),
        ("https://acme.webex.com/meet/x", "webex"),
        ("http://meet.google.com/abc-defg-hij", None),
        ("https://example.com/meeting", None),
        ("not a url", None),
        ("https://evilzoom.us/j/1", None),
    ],
)
def test_detect_platform(link: str, platform: str | None) -> None:
    assert detect_platform(link) == platform


@pytest.mark.parametrize("platform", PLATFORMS)
def test_generated_links_are_detected(platform: str) -> None:
    link = meeting_link_for(random.Random(0), platform)
    assert detect_platform(link) == platform


def test_step_from_dict_accepts_the_control_shapes() -> None:
    assert step_from_dict({"after": 1, "status": "joining"}).status == "joining"
    assert step_from_dict({"join": "Alice"}).join == "Alice"
    step = step_from_dict(
        {
            "status": "failed",
            "error_code": "X",
            "error_message": "y",
            "timestamp": "2025-12-11T10:00:05Z",
        }
    )
    assert step.error_code == "X"
    assert step.timestamp == datetime(2025, 12, 11, 10, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"status": "active", "join": "Alice"},
        {"after": -1, "status": "active"},
        {"after": "1", "status": "active"},
        {"status": 3},
        {"join": "Alice", "error_code": "X"},
        {"status": "active", "colour": "red"},
        {"status": "active", "timestamp": "yesterday"},
    ],
)
def test_step_from_dict_rejects_nonsense(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        step_from_dict(data)


def test_after_is_refused_where_it_makes_no_sense() -> None:
    with pytest.raises(ValueError):
        step_from_dict({"after": 1, "status": "active"}, allow_after=False)
