"""Pure Server-Sent Events encoding, byte for byte as the provider's example (Part A).

Each event is `event: <name>` / optional `id: <n>` / `data: <compact JSON>` and a blank line.
The line ending is configurable only so fault knobs can exercise CRLF / CR parsers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

LineEnding = Literal["lf", "crlf", "cr"]

NEWLINES: dict[str, str] = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}

KEEPALIVE_COMMENT = "keepalive"
# SSE lines end only at CR, LF or CRLF (str.splitlines would also cut at U+2028, U+0085...).
SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def compact_json(data: Any) -> str:
    """JSON as the provider writes it: no spaces, UTF-8 kept as-is (not \\u-escaped)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def encode_event(
    name: str, data: str, *, event_id: str | None = None, line_ending: LineEnding = "lf"
) -> bytes:
    newline = NEWLINES[line_ending]
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in SSE_LINE_BREAK.split(data))
    return (newline.join(lines) + newline + newline).encode()


def encode_comment(text: str = KEEPALIVE_COMMENT, *, line_ending: LineEnding = "lf") -> bytes:
    newline = NEWLINES[line_ending]
    return f": {text}{newline}{newline}".encode()


def split_chunks(payload: bytes, size: int | None) -> Iterator[bytes]:
    """Split `payload` into pieces of at most `size` bytes (UTF-8 sequences may be cut)."""
    if not size or size >= len(payload):
        yield payload
        return
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def encode_retry(milliseconds: int, *, line_ending: LineEnding = "lf") -> bytes:
    newline = NEWLINES[line_ending]
    return f"retry: {milliseconds}{newline}{newline}".encode()
