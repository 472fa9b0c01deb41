"""Byte-level parsing of the upstream status stream (httpx.MockTransport, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime

import httpx
import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_monitor.upstream import (
    EventStreamDecoder,
    MeetingBuddyClient,
    ParticipantJoined,
    ParticipantLeft,
    StatusChanged,
    StreamClosed,
    StreamDisconnected,
    Unparseable,
    UpstreamEvent,
    parse_event,
)

SID = "mbsess_abc123def456"

# Part A's example, byte for byte in content.
EXAMPLE = (
    "event: status\n"
    'data: {"session_id":"mbsess_abc123def456","status":"joining","previous_status":"joining","timestamp":"2025-12-11T10:00:05Z","error_message":null,"error_code":null}\n'
    "\n"
    ": keepalive\n"
    "\n"
    "event: status\n"
    'data: {"session_id":"mbsess_abc123def456","status":"active","previous_status":"active","timestamp":"2025-12-11T10:00:30Z","error_message":null,"error_code":null}\n'
    "\n"
    "event: status\n"
    'data: {"session_id":"mbsess_abc123def456","participant_name":"Alice","event":"joined","timestamp":"2025-12-11T10:01:00Z"}\n'
    "\n"
    "event: status\n"
    'data: {"session_id":"mbsess_abc123def456","status":"completed","previous_status":"completed","timestamp":"2025-12-11T10:30:00Z","error_message":null,"error_code":null}\n'
    "\n"
    "event: close\n"
    'data: {"reason":"session_ended"}\n'
    "\n"
)
EXAMPLE_BYTES = EXAMPLE.encode()


def _data_lines() -> list[str]:
    return [line[len("data: ") :] for line in EXAMPLE.splitlines() if line.startswith("data: ")]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


RAW = _data_lines()
EXPECTED: list[UpstreamEvent] = [
    StatusChanged(SID, "joining", "joining", _ts("2025-12-11T10:00:05"), None, None, RAW[0]),
    StatusChanged(SID, "active", "active", _ts("2025-12-11T10:00:30"), None, None, RAW[1]),
    ParticipantJoined(SID, "Alice", _ts("2025-12-11T10:01:00"), RAW[2]),
    StatusChanged(SID, "completed", "completed", _ts("2025-12-11T10:30:00"), None, None, RAW[3]),
    StreamClosed("session_ended", RAW[4]),
]


class ChunkStream(httpx.AsyncByteStream):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = [chunk for chunk in chunks if chunk]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def sse_response(
    chunks: Iterable[bytes], content_type: str = "text/event-stream"
) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": content_type}, stream=ChunkStream(chunks))


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> MeetingBuddyClient:
    transport = httpx.MockTransport(handler)
    return MeetingBuddyClient(
        "http://upstream.test", "tok", http_client=httpx.AsyncClient(transport=transport)
    )


async def stream_events(
    chunks: Iterable[bytes], client: MeetingBuddyClient | None = None
) -> list[UpstreamEvent]:
    chunk_list = list(chunks)
    if client is None:
        client = client_for(lambda request: sse_response(chunk_list))
        async with client:
            return [event async for event in client.stream_status(SID, stall_seconds=5)]
    client.http._transport = httpx.MockTransport(lambda request: sse_response(chunk_list))
    return [event async for event in client.stream_status(SID, stall_seconds=5)]


def decode_all(chunks: Iterable[bytes]) -> list[UpstreamEvent]:
    """The sans-IO path alone: decoder + parse_event."""
    decoder = EventStreamDecoder()
    return [parse_event(sse) for chunk in chunks for sse in decoder.feed(chunk)]


def split_at(payload: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(payload)]
    return [payload[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def with_line_ending(text: str, ending: str) -> bytes:
    return text.replace("\n", ending).encode()


async def test_the_part_a_example_parses_to_the_documented_events() -> None:
    assert await stream_events([EXAMPLE_BYTES]) == EXPECTED


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
async def test_every_single_split_point_gives_the_same_events(ending: str) -> None:
    payload = with_line_ending(EXAMPLE, ending)
    client = client_for(lambda request: sse_response([]))
    async with client:
        for cut in range(1, len(payload)):
            events = await stream_events([payload[:cut], payload[cut:]], client)
            assert events == EXPECTED, f"split at byte {cut}: {payload[cut - 3 : cut + 3]!r}"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
async def test_one_byte_per_chunk_gives_the_same_events(ending: str) -> None:
    payload = with_line_ending(EXAMPLE, ending)
    assert await stream_events([payload[i : i + 1] for i in range(len(payload))]) == EXPECTED


async def test_a_leading_bom_is_stripped_even_when_split_across_chunks() -> None:
    payload = b"\xef\xbb\xbf" + EXAMPLE_BYTES
    assert await stream_events([payload]) == EXPECTED
    assert await stream_events([payload[:1], payload[1:2], payload[2:]]) == EXPECTED


def test_httpx_sse_alone_loses_the_first_event_after_a_bom() -> None:
    """The trap we fix: without stripping, the first field name is '\\ufeffevent'."""
    lines, decoder = SSELineDecoder(), SSEDecoder()
    events = [sse for line in lines.decode("\ufeff" + EXAMPLE) if (sse := decoder.decode(line))]
    assert events[0].event == "message"  # the 'status' name was lost
    assert decode_all([b"\xef\xbb\xbf" + EXAMPLE_BYTES]) == EXPECTED


def test_only_one_bom_is_stripped() -> None:
    stream = b"\xef\xbb\xbf\xef\xbb\xbfevent: status\ndata: {}\n\n"
    [event] = decode_all([stream])
    assert isinstance(event, Unparseable) and event.event_name == "message"


async def test_comments_anywhere_are_ignored() -> None:
    payload = (
        ": hello\n"
        "event: status\n"
        ": inside a block\n"
        f"data: {RAW[0]}\n"
        ":\n"
        "\n"
        ": keepalive\n\n: keepalive\n\n"
        "event: close\n"
        ": x\n"
        f"data: {RAW[4]}\n"
        "\n"
    ).encode()
    assert await stream_events([payload]) == [EXPECTED[0], EXPECTED[4]]


async def test_multi_line_data_is_joined_with_newlines() -> None:
    payload = (
        b"event: status\n"
        b'data: {"session_id":"mbsess_abc123def456",\n'
        b'data: "status":"waiting",\n'
        b'data:"previous_status":null}\n'
        b"\n"
    )
    with pytest.raises(StreamDisconnected):
        await stream_events([payload])
    [event] = decode_all([payload])
    assert event == StatusChanged(
        SID,
        "waiting",
        None,
        None,
        raw='{"session_id":"mbsess_abc123def456",\n"status":"waiting",\n"previous_status":null}',
    )


def test_id_lines_are_kept_on_events_and_as_the_last_event_id() -> None:
    decoder = EventStreamDecoder()
    events = decoder.feed(f"id: 7\nevent: status\ndata: {RAW[0]}\n\n".encode())
    assert [parse_event(sse).event_id for sse in events] == ["7"]
    assert decoder.last_event_id == "7"
    # An id-only block is not an event but still moves the last event id.
    assert decoder.feed(b"id: 8\n\n") == []
    assert decoder.last_event_id == "8"
    # An id containing NUL is ignored; an empty id resets.
    assert decoder.feed(b"id: 9\x00\n\n") == []
    assert decoder.last_event_id == "8"
    assert decoder.feed(b"id\n\n") == []
    assert decoder.last_event_id == ""


def test_no_phantom_event_after_a_comment_once_an_id_was_seen() -> None:
    stream = f"id: 1\nevent: status\ndata: {RAW[0]}\n\n: keepalive\n\nid: 2\n\n".encode()
    lines, raw_decoder = SSELineDecoder(), SSEDecoder()
    raw = [sse for line in lines.decode(stream.decode()) if (sse := raw_decoder.decode(line))]
    assert [sse.data for sse in raw] == [RAW[0], "", ""]  # httpx-sse's phantoms
    assert decode_all([stream]) == [
        StatusChanged(
            SID, "joining", "joining", _ts("2025-12-11T10:00:05"), raw=RAW[0], event_id="1"
        )
    ]


def test_a_block_without_data_lines_is_not_dispatched_but_empty_data_is() -> None:
    events = decode_all([b"event: status\n\nevent: status\ndata\n\nevent: close\ndata:\n\n"])
    assert events == [Unparseable("status", "", "invalid_json"), StreamClosed("", "")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("retry: 2500", 2500),
        ("retry:2500", 2500),
        ("retry: 0", 0),
        ("retry: -5", None),
        ("retry: 1_000", None),
        ("retry: 12a", None),
        ("retry: 1.5", None),
        ("retry: ", None),
        ("retry: \u0661\u0662", None),  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_retry_accepts_ascii_digits_only(line: str, expected: int | None) -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(f"{line}\n\n".encode()) == []  # a retry-only block is not an event
    assert decoder.retry_ms == expected


def test_httpx_sse_alone_accepts_bad_retry_values() -> None:
    decoder = SSEDecoder()
    decoder.decode("retry: 1_000")
    assert decoder.decode("").retry == 1000  # type: ignore[union-attr]


def test_a_bad_retry_keeps_the_previous_good_one() -> None:
    decoder = EventStreamDecoder()
    decoder.feed(b"retry: 3000\n\nretry: -5\n\n")
    assert decoder.retry_ms == 3000


async def test_unknown_event_names_are_kept_and_the_stream_goes_on() -> None:
    payload = (
        f'event: transcript\ndata: {{"text":"hi"}}\n\n'
        f"data: plain message\n\n"
        f"event: status\ndata: {RAW[0]}\n\n"
        f"event: close\ndata: {RAW[4]}\n\n"
    ).encode()
    assert await stream_events([payload]) == [
        Unparseable("transcript", '{"text":"hi"}', "unknown_event"),
        Unparseable("message", "plain message", "unknown_event"),
        EXPECTED[0],
        EXPECTED[4],
    ]


async def test_invalid_json_is_unparseable_and_later_events_still_arrive() -> None:
    payload = (
        "event: status\ndata: {not json\n\n"
        'event: status\ndata: ["a list"]\n\n'
        'event: status\ndata: {"status":"active"}\n\n'
        'event: status\ndata: {"session_id":"mbsess_abc123def456"}\n\n'
        'event: status\ndata: {"session_id":"mbsess_abc123def456","participant_name":"Bob","event":"waved"}\n\n'
        'event: status\ndata: {"session_id":"mbsess_abc123def456","event":"left"}\n\n'
        f"event: status\ndata: {RAW[1]}\n\n"
        f"event: close\ndata: {RAW[4]}\n\n"
    ).encode()
    events = await stream_events([payload])
    reasons = [event.reason for event in events if isinstance(event, Unparseable)]
    assert reasons == [
        "invalid_json",
        "not_an_object",
        "missing_field:session_id",
        "missing_field:status",
        "unknown_participant_event",
        "missing_field:participant_name",
    ]
    assert events[-2:] == [EXPECTED[1], EXPECTED[4]]


async def test_invalid_utf8_costs_at_most_one_event() -> None:
    payload = b"event: status\ndata: {\xff\xfe}\n\n" + EXAMPLE_BYTES
    events = await stream_events([payload])
    assert isinstance(events[0], Unparseable) and "\ufffd" in events[0].raw
    assert events[1:] == EXPECTED


def test_participant_left_and_unknown_status_values_pass_through() -> None:
    decoder = EventStreamDecoder()
    stream = (
        b'event: status\ndata: {"session_id":"mbsess_abc123def456","participant_name":"Alice","event":"left","timestamp":"2025-12-11T10:02:00+01:00"}\n\n'
        b'event: status\ndata: {"session_id":"mbsess_abc123def456","status":"waiting","previous_status":null,"timestamp":"yesterday"}\n\n'
        b'event: status\ndata: {"session_id":"mbsess_abc123def456","status":"failed","previous_status":"active","error_code":"BOT_KICKED","error_message":"Removed by host"}\n\n'
    )
    left, waiting, failed = (parse_event(sse) for sse in decoder.feed(stream))
    assert isinstance(left, ParticipantLeft) and left.participant_name == "Alice"
    assert left.timestamp == datetime.fromisoformat("2025-12-11T10:02:00+01:00")
    assert isinstance(waiting, StatusChanged) and waiting.status == "waiting"
    assert waiting.timestamp is None and not waiting.is_terminal
    assert isinstance(failed, StatusChanged) and failed.is_terminal
    assert (failed.error_code, failed.error_message) == ("BOT_KICKED", "Removed by host")


async def test_an_event_for_another_session_is_not_trusted() -> None:
    other = RAW[1].replace(SID, "mbsess_other")
    payload = f"event: status\ndata: {other}\n\nevent: close\ndata: {RAW[4]}\n\n".encode()
    assert await stream_events([payload]) == [
        Unparseable("status", other, "session_mismatch"),
        EXPECTED[4],
    ]


async def test_an_incomplete_event_at_eof_is_dropped_and_reported_as_a_disconnect() -> None:
    payload = f"event: status\ndata: {RAW[0]}\n\nevent: status\ndata: {RAW[1]}\n".encode()
    received: list[UpstreamEvent] = []
    client = client_for(lambda request: sse_response([payload]))
    async with client:
        with pytest.raises(StreamDisconnected):
            async for event in client.stream_status(SID, stall_seconds=5):
                received.append(event)
    assert received == [EXPECTED[0]]


async def test_a_close_with_unreadable_data_still_ends_the_stream() -> None:
    payload = f"event: status\ndata: {RAW[0]}\n\nevent: close\ndata: bye\n\n".encode()
    assert await stream_events([payload]) == [EXPECTED[0], StreamClosed("", "bye")]


# -- property: chunking and comments never change the events ---------------------------------

_COMMENT_TEXT = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=12
)
_EXAMPLE_LINES = EXAMPLE.split("\n")[:-1]


@st.composite
def noisy_example(draw: st.DrawFn) -> list[bytes]:
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines: list[str] = []
    for line in _EXAMPLE_LINES:
        for _ in range(draw(st.integers(0, 2))):
            lines.append(":" + draw(_COMMENT_TEXT))
        lines.append(line)
    payload = (ending.join(lines) + ending).encode()
    if draw(st.booleans()):
        payload = b"\xef\xbb\xbf" + payload
    cuts = draw(st.lists(st.integers(1, len(payload) - 1), max_size=40))
    return split_at(payload, cuts)


@settings(max_examples=300, deadline=None)
@given(noisy_example())
def test_property_chunking_and_comments_never_change_the_events(chunks: list[bytes]) -> None:
    assert decode_all(chunks) == EXPECTED


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(noisy_example())
def test_property_holds_through_the_http_client(chunks: list[bytes]) -> None:
    assert asyncio.run(stream_events(chunks)) == EXPECTED


def test_a_cr_terminated_event_is_delivered_without_waiting_for_the_next_chunk() -> None:
    decoder = EventStreamDecoder()
    [sse] = decoder.feed(f"event: close\rdata: {RAW[4]}\r\r".encode())
    assert parse_event(sse) == EXPECTED[4]
    # ...and an LF opening the next chunk is the rest of a CRLF, not a blank line.
    assert decoder.feed(f"\nevent: status\r\ndata: {RAW[0]}\r".encode()) == []
    [sse] = decoder.feed(b"\n\r\n")
    assert parse_event(sse) == EXPECTED[0]


def test_httpx_sse_alone_holds_a_trailing_cr_back() -> None:
    lines = SSELineDecoder()
    assert lines.decode("data: x\r\r") == ["data: x"]  # the blank line waits for more bytes
