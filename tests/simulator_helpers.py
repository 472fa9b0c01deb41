"""Test helpers for the simulator: a raw-socket HTTP/1.1 stream reader and SSE frame parsing.

The raw reader sees exactly what went over the wire: every HTTP chunk's boundaries, the
terminating zero-length chunk, line endings. That is what the fault knobs are about.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


def new_session_id() -> str:
    return f"mbsess_test_{uuid.uuid4().hex[:16]}"


class RawStream:
    """`GET path` on a fresh socket; decodes chunked transfer encoding as it arrives."""

    def __init__(
        self,
        base_url: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.create_connection((host, port), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        lines += ["Connection: close", "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        self._raw = b""
        self.eof = False
        self.ended = False  # saw the terminating zero-length chunk (or Content-Length done)
        self.body = b""
        self.chunks: list[bytes] = []
        head = self._read_head(time.monotonic() + timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            self.headers[key.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.length = (
            int(self.headers["content-length"]) if "content-length" in self.headers else None
        )

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _recv(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no more bytes before the deadline")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self._raw += data
        return True

    def _read_head(self, deadline: float) -> bytes:
        while b"\r\n\r\n" not in self._raw:
            if not self._recv(deadline):
                raise ConnectionError("connection closed before the response head")
        head, _, self._raw = self._raw.partition(b"\r\n\r\n")
        return head

    def next_chunk(self, deadline: float) -> bytes | None:
        """The next body piece (an HTTP chunk), or None at the end of the response."""
        if self.ended:
            return None
        if not self.chunked:
            return self._next_plain(deadline)
        while b"\r\n" not in self._raw:
            if not self._recv(deadline):
                raise ConnectionError("connection closed inside a chunk header")
        size_line, _, rest = self._raw.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(rest) < size + 2:
            if not self._recv(deadline):
                raise ConnectionError("connection closed inside a chunk")
            size_line, _, rest = self._raw.partition(b"\r\n")
        chunk, self._raw = rest[:size], rest[size + 2 :]
        if size == 0:
            self.ended = True
            return None
        self.chunks.append(chunk)
        self.body += chunk
        return chunk

    def _next_plain(self, deadline: float) -> bytes | None:
        if not self._raw and (self.length is None or len(self.body) < self.length):
            self._recv(deadline)
        chunk, self._raw = self._raw, b""
        if not chunk:
            self.ended = True
            return None
        self.body += chunk
        if self.length is not None and len(self.body) >= self.length:
            self.ended = True
        return chunk

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        """Read until `marker` is in the body; returns the whole body so far."""
        deadline = time.monotonic() + timeout
        while marker not in self.body:
            if self.next_chunk(deadline) is None:
                raise EOFError(f"response ended before {marker!r}; body: {self.body!r}")
        return self.body

    def read_frames(self, count: int, timeout: float = 10.0) -> list[Frame]:
        """Read until the body holds at least `count` complete SSE blocks."""
        deadline = time.monotonic() + timeout
        while len(frames(self.body)) < count:
            if self.next_chunk(deadline) is None:
                raise EOFError(f"response ended before {count} frames; body: {self.body!r}")
        return frames(self.body)

    def read_to_end(self, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while self.next_chunk(deadline) is not None:
            pass
        return self.body


@dataclass(frozen=True)
class Frame:
    """One SSE block: comment, or event with name/id/data (data kept as text)."""

    event: str | None
    data: str | None
    id: str | None = None
    comment: str | None = None

    def json(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)


def frames(body: bytes) -> list[Frame]:
    """SSE blocks of `body` (any line ending), in order; an unterminated tail is ignored."""
    text = body.decode().replace("\r\n", "\n").replace("\r", "\n")
    blocks = text.split("\n\n")[:-1]
    result = []
    for block in blocks:
        fields: dict[str, str] = {}
        comment = None
        for line in block.split("\n"):
            if line.startswith(":"):
                comment = line[1:].strip()
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        result.append(Frame(fields.get("event"), fields.get("data"), fields.get("id"), comment))
    return result


def events(body: bytes) -> list[Frame]:
    return [frame for frame in frames(body) if frame.event is not None]
