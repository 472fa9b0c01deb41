from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sessions_monitor import presentation as p

T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "label", "tone"),
    [
        ("initializing", "Initializing", "pending"),
        ("joining", "Joining", "pending"),
        ("waiting", "In waiting room", "pending"),
        ("active", "In meeting", "live"),
        ("recording", "Recording", "live"),
        ("leaving", "Leaving", "pending"),
        ("completed", "Completed", "done"),
        ("failed", "Failed", "bad"),
        ("on_hold", "On hold", "unknown"),
        ("", "Unknown", "unknown"),
    ],
)
def test_every_status_has_a_text_label_and_a_tone(status: str, label: str, tone: str) -> None:
    assert p.status_label(status) == label
    assert p.status_tone(status) == tone


@pytest.mark.parametrize(
    ("status", "category"),
    [("active", "live"), ("waiting", "live"), ("completed", "ended"), ("failed", "failed")],
)
def test_status_category(status: str, category: str) -> None:
    assert p.status_category(status) == category


def test_filters_match_statuses() -> None:
    assert p.matches_filter("active", "live")
    assert not p.matches_filter("completed", "live")
    assert p.matches_filter("failed", "ended")  # ended = every terminal session
    assert p.matches_filter("completed", "ended")
    assert p.matches_filter("failed", "failed")
    assert not p.matches_filter("completed", "failed")
    assert p.matches_filter("anything", "all")


@pytest.mark.parametrize(
    ("platform", "label"),
    [
        ("google_meet", "Google Meet"),
        ("meet", "Google Meet"),
        ("teams", "Microsoft Teams"),
        ("zoom", "Zoom"),
        ("webex", "Webex"),
        ("new_thing", "New Thing"),
        ("", "Unknown platform"),
    ],
)
def test_platform_labels(platform: str, label: str) -> None:
    assert p.platform_label(platform) == label


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://meet.google.com/abc-defg-hij", "meet.google.com"),
        ("https://US02web.zoom.us/j/123?pwd=x", "us02web.zoom.us"),
        ("not a link", ""),
        ("", ""),
        ("https://[::1", ""),
    ],
)
def test_link_host(url: str, host: str) -> None:
    assert p.link_host(url) == host


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (-3, "0 s"),
        (45.9, "45 s"),
        (185, "3 min 05 s"),
        (3720, "1 h 02 min"),
        (2 * 86400 + 3 * 3600 + 5, "2 d 3 h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert p.format_duration(seconds) == text


def test_format_age() -> None:
    assert p.format_age(None, T0) == "never"
    assert p.format_age(T0, T0 + timedelta(seconds=1)) == "just now"
    assert p.format_age(T0, T0 + timedelta(seconds=75)) == "1 min 15 s ago"


def test_failure_explanations_cover_known_codes_and_say_when_unknown() -> None:
    assert "lobby" in p.failure_explanation("ADMISSION_TIMEOUT")
    assert p.failure_explanation("meeting_not_found") == p.FAILURE_EXPLANATIONS["MEETING_NOT_FOUND"]
    assert p.failure_explanation("SOMETHING_NEW") == p.UNKNOWN_FAILURE
    assert "without an error code" in p.failure_explanation("")


def test_upstream_freshness_states() -> None:
    live = p.upstream_freshness("live", since=T0, retry_at=None, now=T0)
    assert (live.state, live.text, live.stale) == ("live", "Upstream live", False)

    retrying = p.upstream_freshness(
        "retrying", since=T0, retry_at=T0 + timedelta(seconds=7), now=T0 + timedelta(seconds=2)
    )
    assert retrying.text == "Upstream retrying in 5 s"
    assert retrying.stale and retrying.stale_since == T0 and retrying.retry_in == 5

    ended = p.upstream_freshness("ended", since=T0, retry_at=None, now=T0)
    assert (ended.state, ended.stale) == ("ended", False)
    idle_but_over = p.upstream_freshness("idle", since=None, retry_at=None, terminal=True, now=T0)
    assert idle_but_over.state == "ended"

    failed = p.upstream_freshness("failed", since=T0, retry_at=None, error="not_found", now=T0)
    assert (failed.state, failed.text, failed.stale) == ("failed", "Lost contact", True)
    assert failed.detail == "Meeting Buddy no longer knows this session."
    odd = p.upstream_freshness("failed", since=T0, retry_at=None, error="client_error", now=T0)
    assert odd.detail == "Meeting Buddy refused the status stream (client_error)."
    over = p.upstream_freshness("failed", since=T0, retry_at=None, terminal=True, now=T0)
    assert over.state == "ended", "a session that ended has not lost anything"
    assert p.upstream_freshness("connecting", since=T0, retry_at=None, now=T0).stale
    assert p.upstream_freshness("idle", since=None, retry_at=None, now=T0).stale


def test_overall_upstream_reports_the_worst_link() -> None:
    live = p.upstream_freshness("live", since=T0, retry_at=None, now=T0)
    retry = p.upstream_freshness("retrying", since=T0, retry_at=None, now=T0)
    later = p.upstream_freshness("retrying", since=T0 + timedelta(seconds=9), retry_at=None, now=T0)
    assert p.overall_upstream([live, live]).state == "live"
    one = p.overall_upstream([live, retry])
    assert (one.state, one.stale, one.stale_since) == ("retrying", True, T0)
    two = p.overall_upstream([retry, later, live])
    assert two.text == "2 upstream links retrying" and two.stale_since == T0
    assert p.overall_upstream([]).state == "none"


def test_links_that_lost_contact_are_counted_beside_the_retrying_ones() -> None:
    live = p.upstream_freshness("live", since=T0, retry_at=None, now=T0)
    retry = p.upstream_freshness("retrying", since=T0, retry_at=None, now=T0)
    lost = p.upstream_freshness("failed", since=T0, retry_at=None, error="not_found", now=T0)
    only_lost = p.overall_upstream([live, lost, lost])
    assert (only_lost.state, only_lost.text, only_lost.stale) == ("lost", "2 lost contact", False)
    both = p.overall_upstream([lost, retry])
    assert (both.state, both.stale) == ("retrying", True)
    assert both.text == "Upstream retrying · 1 lost contact"


def _event(seq: int, kind: str, at: datetime, **fields: str) -> p.TimelineEvent:
    return p.timeline_event(
        {"seq": seq, "kind": kind, "upstream_timestamp": at.isoformat(), **fields}
    )


def test_timeline_event_summary_and_raw() -> None:
    status = _event(3, "status", T0, status="active", previous_status="joining", raw='{"a":1}')
    assert status.summary == "Joining → In meeting"
    assert status.raw_pretty == '{\n  "a": 1\n}'
    joined = _event(4, "joined", T0, participant_name="Zoë")
    assert (joined.summary, joined.tone, joined.kind_label) == (
        "Zoë joined",
        "live",
        "Participant joined",
    )
    broken = _event(5, "anomaly", T0, raw="not json {", note="late non-terminal status ignored")
    assert (
        broken.raw_pretty == "not json {" and broken.summary == "late non-terminal status ignored"
    )
    no_time = p.timeline_event({"seq": 1, "kind": "close", "received_at": T0.isoformat()})
    assert no_time.at == T0 and no_time.summary == "Upstream closed the stream"


def test_session_view_from_a_summary_message() -> None:
    view = p.session_view(
        {
            "session_id": "mbsess_x",
            "status": "failed",
            "platform": "meet",
            "meeting_link": "https://meet.google.com/x",
            "started_at": "2026-01-05T10:00:00Z",
            "ended_at": "2026-01-05T10:02:05Z",
            "error_code": "ADMISSION_DENIED",
            "failed_from_status": "waiting",
            "stream_state": "ended",
            "participants_present": 0,
            "last_seq": 9,
        },
        now=T0 + timedelta(hours=1),
    )
    assert view.duration == "2 min 05 s"
    assert (view.platform_label, view.link_host, view.status_label) == (
        "Google Meet",
        "meet.google.com",
        "Failed",
    )
    assert view.is_failed and view.failed_from_label == "In waiting room"
    assert "declined" in view.failure_explanation
    assert view.upstream.state == "ended" and view.last_seq == 9


def test_regions_for_event_kinds() -> None:
    assert p.regions_for(["joined"]) == {"header", "participants", "svg"}
    assert p.regions_for(["status", "left"]) == {
        "header",
        "failure",
        "transitions",
        "svg",
        "participants",
    }
    assert p.regions_for(["close", "anomaly"]) == frozenset()
    # A link note may mean the link failed for good: the header and panel say "lost contact".
    assert p.regions_for(["stream"]) == {"header", "failure"}
