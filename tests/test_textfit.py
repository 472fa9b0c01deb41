"""No event is dropped for its size or content (issue 11): whatever text the upstream or a
meeting participant sends is stored, cut to its column with a visible marker, cleaned of
what the database refuses. Runs on the suite's database: PostgreSQL in CI's first pass
(where column limits apply), SQLite in the second."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sessions_monitor import services
from sessions_monitor.models import MeetingSession, Presence, SessionEvent
from sessions_monitor.textfit import LIMITS, MARKER, fit, fit_json, was_cut
from sessions_monitor.upstream import ParticipantJoined, ParticipantLeft, StatusChanged

LONG = "Ω" * 10_000
HOSTILE = "Null\x00Byte \ud800lone \udfffsurrogates and 😀"


def sid() -> str:
    return f"mbsess_fit{uuid.uuid4().hex[:10]}"


def test_fit_cuts_with_a_marker_that_says_how_long_it_was() -> None:
    cut = fit(LONG, "participant_name")
    assert len(cut) == LIMITS["participant_name"]
    assert cut.endswith(MARKER.format(length=10_000)) and was_cut(cut)
    assert fit("Alice", "participant_name") == "Alice" and not was_cut("Alice")


def test_fit_replaces_what_no_database_can_store() -> None:
    cleaned = fit(HOSTILE, "participant_name")
    assert "\x00" not in cleaned and "😀" in cleaned
    cleaned.encode("utf-8")  # no lone surrogate left
    assert fit_json({"k\x00": ["\udc00", 1]}) == {"k\ufffd": ["\ufffd", 1]}
    assert fit_json({"big": "x" * 100_000}) == {"cut": True, "length": 100_011}


@given(st.text(max_size=400), st.sampled_from(sorted(LIMITS)))
@hypothesis_settings(max_examples=200, deadline=None)
def test_fit_always_fits_and_encodes(text: str, field: str) -> None:
    fitted = fit(text, field)
    assert len(fitted) <= LIMITS[field]
    assert "\x00" not in fitted
    fitted.encode("utf-8")


@pytest.mark.django_db(transaction=True)
def test_a_huge_hostile_name_is_stored_cut_and_its_leave_still_matches() -> None:
    session_id = sid()
    services.record_event(
        session_id=session_id,
        event=StatusChanged(session_id, "recording", None, None),
        broadcast=False,
    )
    name = LONG + HOSTILE
    raw = json.dumps({"participant_name": name})
    joined = services.record_event(
        session_id=session_id,
        event=ParticipantJoined(session_id, name, None, raw=raw),
        broadcast=False,
    )
    assert joined is not None
    stored = SessionEvent.objects.get(session_id=session_id, seq=joined.seq)
    assert len(stored.participant_name) == LIMITS["participant_name"]
    assert was_cut(stored.participant_name)
    assert was_cut(stored.raw) or len(stored.raw) <= LIMITS["raw"]
    presence = Presence.objects.get(session_id=session_id)
    assert presence.participant_name == stored.participant_name

    left = services.record_event(
        session_id=session_id, event=ParticipantLeft(session_id, name, None), broadcast=False
    )
    assert left is not None and left.event["kind"] == "left"
    assert Presence.objects.get(session_id=session_id).left_at is not None
    after = services.record_event(
        session_id=session_id, event=ParticipantJoined(session_id, "Next", None), broadcast=False
    )
    assert after is not None and after.seq == left.seq + 1


@pytest.mark.django_db(transaction=True)
def test_huge_bot_names_links_errors_and_statuses_are_stored_cut() -> None:
    session_id = sid()
    services.upsert_session_metadata(
        session_id,
        bot_name=LONG,
        meeting_link="https://zoom.us/j/" + "1" * 5000,
        platform="p" * 100,
        raw={"bot_name": LONG, "nul": "\x00", "bad": "\udc00"},
    )
    failed = services.record_event(
        session_id=session_id,
        event=StatusChanged(
            session_id,
            "failed",
            None,
            None,
            error_code="E" * 500,
            error_message=LONG + HOSTILE,
        ),
        broadcast=False,
    )
    weird = services.record_event(
        session_id=session_id,
        event=StatusChanged(session_id, "s" * 500, None, None),
        broadcast=False,
    )
    session = MeetingSession.objects.get(pk=session_id)
    assert len(session.bot_name) == LIMITS["bot_name"] and was_cut(session.bot_name)
    assert len(session.meeting_link) == LIMITS["meeting_link"]
    assert len(session.platform) <= LIMITS["platform"]
    assert session.raw["nul"] == "\ufffd" and session.raw["bad"] == "\ufffd"
    assert failed is not None and len(session.error_code) <= LIMITS["error_code"]
    assert len(session.error_message) == LIMITS["error_message"]
    assert weird is not None and weird.event["kind"] == "anomaly"  # after terminal: kept
    assert len(weird.event["status"]) <= LIMITS["status"]
