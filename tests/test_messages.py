"""What travels on the channel layer: builders and parsers agree, bad messages are dropped."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sessions_monitor import messages, telemetry


def bad_count(receiver: str) -> float:
    value = telemetry.REGISTRY.get_sample_value(
        "meetingdash_bad_messages_total", {"receiver": receiver}
    )
    return value or 0.0


def test_names() -> None:
    assert messages.SESSIONS_GROUP == "sessions"
    assert messages.RELAY_CHANNEL == "session-relay"
    assert messages.session_group("mbsess_a1") == "session.mbsess_a1"


def test_an_event_message_round_trips() -> None:
    event = {"seq": 7, "kind": "joined", "participant_name": "Ada"}
    summary = {"session_id": "mbsess_a1", "status": "active", "last_seq": 7}
    raw = messages.event_message(session_id="mbsess_a1", seq=7, event=event, session=summary)
    assert raw["type"] == "session.event"

    message = messages.parse_hub_message(dict(raw))
    assert message is not None
    assert (message.kind, message.session_id, message.seq) == ("event", "mbsess_a1", 7)
    assert message.data == event
    assert message.session == summary


def test_a_summary_message_round_trips() -> None:
    summary = {"session_id": "mbsess_a1", "status": "active", "participants_present": 2}
    raw = messages.summary_message(summary)
    assert raw == {"type": "sessions.summary", **summary}

    message = messages.parse_hub_message(raw)
    assert message is not None
    assert (message.kind, message.session_id, message.seq) == ("summary", "mbsess_a1", None)
    assert message.data == summary


@pytest.mark.parametrize("watched", [True, False])
def test_a_watch_message_round_trips(watched: bool) -> None:
    raw = messages.watch_message("mbsess_a1", watched=watched)
    assert raw["type"] == ("session.watch" if watched else "session.unwatch")
    assert messages.parse_watch_message(dict(raw)) == messages.WatchRequest("mbsess_a1", watched)


def test_the_stop_message_is_recognised() -> None:
    assert messages.is_stop(dict(messages.stop_message()))
    assert not messages.is_stop(messages.summary_message({"session_id": "mbsess_a1"}))


BAD_HUB_MESSAGES: list[Any] = [
    {"type": "session.event", "seq": 1, "event": {}},
    {"type": "session.event", "session_id": "mbsess_a1", "event": {}},
    {"type": "session.event", "session_id": "mbsess_a1", "seq": "1", "event": {}},
    {"type": "session.event", "session_id": "mbsess_a1", "seq": True, "event": {}},
    {"type": "session.event", "session_id": "mbsess_a1", "seq": 0, "event": {}},
    {"type": "session.event", "session_id": "mbsess_a1", "seq": 1, "event": "x"},
    {"type": "session.event", "session_id": "mbsess_a1", "seq": 1, "event": {}, "session": 3},
    {"type": "sessions.summary", "status": "active"},
    {"type": "sessions.summary", "session_id": 12},
    {"type": "session.watch", "session_id": "mbsess_a1"},
    {"session_id": "mbsess_a1"},
    {},
    ["not", "a", "mapping"],
]


@pytest.mark.parametrize("raw", BAD_HUB_MESSAGES)
def test_a_bad_hub_message_is_logged_counted_and_dropped(
    raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before = bad_count("hub")
    with caplog.at_level(logging.WARNING, logger="sessions_monitor.messages"):
        assert messages.parse_hub_message(raw) is None
    assert bad_count("hub") == before + 1
    assert "hub: dropped" in caplog.text


BAD_WATCH_MESSAGES: list[Any] = [
    {"type": "session.watch"},
    {"type": "session.unwatch", "session_id": None},
    {"type": "session.watch", "session_id": ""},
    {"type": "session.event", "session_id": "mbsess_a1"},
    {"session_id": "mbsess_a1"},
    "session.watch",
]


@pytest.mark.parametrize("raw", BAD_WATCH_MESSAGES)
def test_a_bad_watch_message_is_logged_counted_and_dropped(
    raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before = bad_count("relay")
    with caplog.at_level(logging.WARNING, logger="sessions_monitor.messages"):
        assert messages.parse_watch_message(raw) is None
    assert bad_count("relay") == before + 1
    assert "relay: dropped" in caplog.text


def test_a_bad_message_log_names_its_keys_not_its_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = {"type": "sessions.summary", "bot_name": "Ada Lovelace's bot"}
    with caplog.at_level(logging.WARNING, logger="sessions_monitor.messages"):
        messages.parse_hub_message(raw)
    assert "bot_name" in caplog.text
    assert "Ada Lovelace" not in caplog.text
