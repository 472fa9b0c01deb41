"""Pure SSE encoding: the provider's example format, line endings, chunking."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions_monitor.simulator.sse import (
    compact_json,
    encode_comment,
    encode_event,
    split_chunks,
)


def test_event_is_event_line_data_line_blank_line() -> None:
    assert encode_event("close", compact_json({"reason": "session_ended"})) == (
        b'event: close\ndata: {"reason":"session_ended"}\n\n'
    )


def test_compact_json_has_no_spaces_and_keeps_utf8() -> None:
    text = compact_json({"participant_name": "Zoë Müller", "n": None})
    assert text == '{"participant_name":"Zoë Müller","n":null}'
    assert "Zoë".encode() in encode_event("status", text)


def test_event_id_line_only_when_asked() -> None:
    assert encode_event("status", "{}", event_id="7") == b"event: status\nid: 7\ndata: {}\n\n"
    assert b"id:" not in encode_event("status", "{}")


@pytest.mark.parametrize(("ending", "newline"), [("lf", b"\n"), ("crlf", b"\r\n"), ("cr", b"\r")])
def test_line_endings(ending: str, newline: bytes) -> None:
    payload = encode_event("status", "{}", line_ending=ending)  # type: ignore[arg-type]
    assert payload == b"event: status" + newline + b"data: {}" + newline + newline
    assert encode_comment(line_ending=ending) == b": keepalive" + newline + newline  # type: ignore[arg-type]


def test_keepalive_comment_matches_the_example() -> None:
    assert encode_comment() == b": keepalive\n\n"


def test_split_chunks_cuts_into_pieces_of_at_most_size() -> None:
    assert list(split_chunks(b"abcdefg", 3)) == [b"abc", b"def", b"g"]
    assert list(split_chunks(b"abc", None)) == [b"abc"]
    assert list(split_chunks(b"abc", 10)) == [b"abc"]


@given(st.binary(min_size=1, max_size=300), st.integers(min_value=1, max_value=50))
def test_split_chunks_round_trips(payload: bytes, size: int) -> None:
    pieces = list(split_chunks(payload, size))
    assert b"".join(pieces) == payload
    assert all(1 <= len(piece) <= size for piece in pieces)


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5))
def test_data_is_always_one_line_of_json(data: dict[str, str]) -> None:
    lines = encode_event("status", compact_json(data)).decode().split("\n")
    assert lines[0] == "event: status"
    assert lines[1].startswith("data: ")
    assert json.loads(lines[1].removeprefix("data: ")) == data
    assert lines[2:] == ["", ""]
