"""The Meeting Buddy client: REST calls and the status stream, over one shared httpx client.

Stall detection, measured and decided
-------------------------------------
A stall is "no bytes at all, keepalives included, for `stall_seconds`". The body is read
with `response.aiter_bytes()` and every `anext()` is wrapped in `asyncio.timeout(window)`
(a watchdog that restarts on each chunk); the bytes are fed to our `EventStreamDecoder`
(httpx-sse's decoder plus the spec fixes, see `parse.py`) instead of `aiter_sse()`, because
`aiter_sse()` hides the bytes: a keepalive comment never surfaces, so nothing above it can
tell a quiet stream from a dead one.

We keep the watchdog rather than relying on httpx's read timeout alone because
(1) it also works on transports that ignore timeouts (ASGI, mock), (2) it lets the window
shrink to `END_GRACE_SECONDS` once a terminal status arrived, without a new request, and
(3) its reason is unambiguous. Its cost is one timer per chunk, measured by
`bench/upstream_client.py` on this 2-core box: ~7 µs per chunk, against ~170 µs of CPU per
keepalive chunk for a whole idle stream; with 1,000 idle streams our client used the same CPU
as bare httpx-sse (0.9x, within noise) and 1.1x its memory. The read timeout stays as a
backstop (stall + 1 s), which also covers the wait for the response headers. It must never
be httpx's default 5 s: the upstream only writes a keepalive every 15 s.

The watchdog wraps only the read, never the `yield`: a timeout scope around a `yield` would
cancel whatever the *consumer* happens to be awaiting when it fires.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, cast

import httpx
from httpx_sse import aconnect_sse

from .backoff import BackoffPolicy
from .errors import (
    ClientError,
    InvalidSessionId,
    MalformedResponse,
    StreamDisconnected,
    StreamStalled,
    UpstreamError,
    UpstreamUnavailable,
    WrongContentType,
    error_from_response,
)
from .events import (
    LinkState,
    LinkStateName,
    StatusChanged,
    StreamClosed,
    Unparseable,
    UpstreamEvent,
)
from .ids import validate_session_id
from .metrics import UpstreamMetrics
from .models import ActiveSession, UpstreamSession, UpstreamTranscriptSegment, parse_transcript
from .parse import EventStreamDecoder, event_session_id, event_type, parse_event

logger = logging.getLogger(__name__)

API_PREFIX = "/v1/meeting-buddy"
DEFAULT_STALL_SECONDS = 35.0
#: After a terminal status, how long to wait for the `close` that should follow it.
END_GRACE_SECONDS = 5.0
#: `retry:` is clamped to this range (seconds) before it is used as a reconnect floor.
RETRY_HINT_RANGE = (0.5, 60.0)
LIST_PAGE_SIZE = 100
MAX_LIST_PAGES = 10_000
MAX_ERROR_BODY_BYTES = 64 * 1024
EVENT_STREAM = "text/event-stream"


def make_http_client(
    *,
    max_connections: int | None = 10_000,
    max_keepalive_connections: int = 100,
    connect_timeout: float = 10.0,
    request_timeout: float = 30.0,
) -> httpx.AsyncClient:
    """The one `AsyncClient` all streams share.

    httpx's default pool (100 connections) makes stream 101 wait and then fail with
    `PoolTimeout`; each open stream holds a connection for hours, so the limit must be
    sized for every watched session at once. HTTP/1.1 keep-alive serves the REST calls.
    The default timeout is for REST; streams override `read` per request.
    """
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=30.0,
        ),
        timeout=httpx.Timeout(request_timeout, connect=connect_timeout, pool=connect_timeout),
        http1=True,
        http2=False,
        follow_redirects=False,
    )


@dataclass(slots=True)
class _Cursor:
    """What survives from one connection of a stream to the next."""

    last_event_id: str = ""
    retry_ms: int | None = None
    terminal_seen: bool = False
    closed: bool = False
    last_byte_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.closed or self.terminal_seen

    def retry_floor(self) -> float:
        if self.retry_ms is None:
            return 0.0
        low, high = RETRY_HINT_RANGE
        return min(max(self.retry_ms / 1000, low), high)


def _transport_failure(exc: httpx.TransportError) -> UpstreamError:
    name = type(exc).__name__
    if isinstance(exc, httpx.ReadTimeout):
        return StreamStalled(f"No bytes before the read timeout ({name}).")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return UpstreamUnavailable(
            f"Cannot connect to the upstream ({name}).", code="CONNECT_FAILED"
        )
    if isinstance(exc, httpx.PoolTimeout):
        return UpstreamUnavailable("No free connection in the pool.", code="POOL_TIMEOUT")
    return StreamDisconnected(f"The connection broke ({name}).", code="TRANSPORT_ERROR")


async def _read_capped(response: httpx.Response, limit: int = MAX_ERROR_BODY_BYTES) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


class MeetingBuddyClient:
    """Async Meeting Buddy client. Use as `async with MeetingBuddyClient(url, token) as c:`.

    Pass `http_client` to share one pool between clients (it is then not closed here).
    """

    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        http_client: httpx.AsyncClient | None = None,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        backoff: BackoffPolicy | None = None,
        metrics: UpstreamMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._owns_http = http_client is None
        self.http = http_client if http_client is not None else make_http_client()
        self.stall_seconds = stall_seconds
        self.backoff = backoff or BackoffPolicy()
        self.metrics = metrics or UpstreamMetrics()
        self.skipped_segments = 0
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"MeetingBuddyClient(base_url={self.base_url!r}, token={'set' if self._token else 'unset'})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}{path}"

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _error(self, response: httpx.Response, body: bytes) -> UpstreamError:
        return error_from_response(response.status_code, response.headers, body, secret=self._token)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> Any:
        try:
            response = await self.http.request(
                method,
                self._url(path),
                params=params,
                json=json,
                headers=self._headers({"Accept": "application/json"}),
            )
        except httpx.TransportError as exc:
            raise _transport_failure(exc) from exc
        if response.status_code >= 400:
            raise self._error(response, response.content[:MAX_ERROR_BODY_BYTES])
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedResponse(
                f"{method} {path} answered {response.status_code} with a non-JSON body.",
                status=response.status_code,
            ) from exc

    # -- REST -------------------------------------------------------------------------------

    async def list_sessions(
        self, status: str | None = None, *, page_size: int = LIST_PAGE_SIZE
    ) -> list[UpstreamSession]:
        """Every session of the organization, all pages (1-based `page`), deduplicated.

        Sessions can move between pages while we page (new ones arrive), so a session
        seen twice is kept once, first sighting wins.
        """
        sessions: dict[str, UpstreamSession] = {}
        page = 1
        while page <= MAX_LIST_PAGES:
            params: dict[str, str | int] = {"page": page, "page_size": page_size}
            if status is not None:
                params["status"] = status
            body = await self._request("GET", "/sessions", params=params)
            items, total_pages = self._page(body)
            for item in items:
                session = UpstreamSession.from_json(item)
                sessions.setdefault(session.session_id, session)
            if not items or total_pages is None or page >= total_pages:
                break
            page += 1
        return list(sessions.values())

    async def probe(self) -> None:
        """One cheap authenticated request (the first session of the list): raises the
        typed error when the upstream cannot be reached or refuses us."""
        await self._request("GET", "/sessions", params={"page": 1, "page_size": 1})

    @staticmethod
    def _page(body: Any) -> tuple[list[Any], int | None]:
        if isinstance(body, list):  # tolerate an unpaginated bare array
            return body, None
        if not isinstance(body, dict) or not isinstance(body.get("sessions"), list):
            raise MalformedResponse("The session list has no 'sessions' array.")
        total_pages = body.get("total_pages")
        return body["sessions"], total_pages if isinstance(total_pages, int) else None

    async def get_session(self, session_id: str) -> UpstreamSession:
        session_id = validate_session_id(session_id)
        return UpstreamSession.from_json(await self._request("GET", f"/sessions/{session_id}"))

    async def start_session(
        self,
        meeting_link: str,
        *,
        bot_name: str | None = None,
        transcription_enabled: bool | None = None,
        transcription_language: str | None = None,
        **options: Any,
    ) -> UpstreamSession:
        """`POST /sessions` (§5.1); omitted options take the upstream's defaults."""
        body: dict[str, Any] = {"meeting_link": meeting_link, **options}
        for key, value in (
            ("bot_name", bot_name),
            ("transcription_enabled", transcription_enabled),
            ("transcription_language", transcription_language),
        ):
            if value is not None:
                body[key] = value
        return UpstreamSession.from_json(await self._request("POST", "/sessions", json=body))

    async def stop_session(self, session_id: str) -> UpstreamSession:
        """`POST /sessions/{id}/stop` (§5.4): idempotent upstream."""
        session_id = validate_session_id(session_id)
        return UpstreamSession.from_json(
            await self._request("POST", f"/sessions/{session_id}/stop")
        )

    async def active_sessions(self) -> list[ActiveSession]:
        body = await self._request("GET", "/analytics/active")
        if not isinstance(body, list):
            raise MalformedResponse("analytics/active did not answer with an array.")
        return [ActiveSession.from_json(item) for item in body]

    async def transcripts(self, session_id: str) -> list[UpstreamTranscriptSegment]:
        """`GET /sessions/{id}/transcripts` (§5.5): every segment so far, in upstream order.
        A malformed item is skipped (logged, counted in `skipped_segments`), never raised."""
        session_id = validate_session_id(session_id)
        body = await self._request("GET", f"/sessions/{session_id}/transcripts")
        segments, skipped = parse_transcript(body)
        if skipped:
            self.skipped_segments += skipped
            logger.warning("upstream: skipped %d malformed transcript segment(s)", skipped)
        return segments

    # -- the status stream ------------------------------------------------------------------

    def _stream_timeout(self, stall_seconds: float) -> httpx.Timeout:
        base = self.http.timeout
        return httpx.Timeout(
            connect=base.connect, read=stall_seconds + 1.0, write=base.write, pool=base.pool
        )

    @asynccontextmanager
    async def _open_stream(
        self, session_id: str, cursor: _Cursor, stall_seconds: float
    ) -> AsyncIterator[httpx.Response | None]:
        """Open one stream; yields the 200 response, or None for 204; raises for the rest."""
        # identity: a compressing proxy would buffer events to fill its blocks.
        headers = self._headers({"Accept-Encoding": "identity"})
        if cursor.last_event_id:
            headers["Last-Event-ID"] = cursor.last_event_id
        self.metrics.connects += 1
        async with aconnect_sse(
            self.http,
            "GET",
            self._url(f"/sessions/{session_id}/stream"),
            headers=headers,
            timeout=self._stream_timeout(stall_seconds),
        ) as source:
            response = source.response
            # Status before content type: httpx-sse reports a 204 or a 503 page as a wrong
            # content type, which would turn "stop" and "back off" into the same error.
            if response.status_code == 204:
                yield None
                return
            if response.status_code >= 400:
                raise self._error(response, await _read_capped(response))
            if response.status_code != 200:
                raise ClientError(
                    f"Unexpected status {response.status_code} for a stream.",
                    status=response.status_code,
                    code="UNEXPECTED_STATUS",
                )
            media_type = response.headers.get("content-type", "").partition(";")[0]
            if media_type.strip().lower() != EVENT_STREAM:
                raise WrongContentType(
                    f"Expected {EVENT_STREAM}, got {media_type.strip()[:100]!r}.", status=200
                )
            self.metrics.open_streams += 1
            try:
                yield response
            finally:
                self.metrics.open_streams -= 1

    async def _read_events(
        self, response: httpx.Response, session_id: str, cursor: _Cursor, stall_seconds: float
    ) -> AsyncGenerator[UpstreamEvent, None]:
        decoder = EventStreamDecoder(cursor.last_event_id, cursor.retry_ms)
        metrics = self.metrics
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        try:
            while True:
                window = min(stall_seconds, END_GRACE_SECONDS) if cursor.ended else stall_seconds
                try:
                    async with asyncio.timeout(window):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise StreamStalled(f"No bytes for {window:g} s.") from exc
                metrics.record_bytes(len(chunk))
                cursor.last_byte_at = datetime.now(UTC)
                for sse in decoder.feed(chunk):
                    event = parse_event(sse)
                    owner = event_session_id(event)
                    if owner is not None and owner != session_id:
                        event = Unparseable(sse.event, sse.data, "session_mismatch", sse.id or None)
                    metrics.record_event(event_type(event))
                    if sse.id:
                        cursor.last_event_id = sse.id
                    if isinstance(event, StatusChanged) and event.is_terminal:
                        cursor.terminal_seen = True
                    elif isinstance(event, StreamClosed):
                        cursor.closed = True
                    yield event
                    if cursor.closed:
                        return
                cursor.last_event_id = decoder.last_event_id
                cursor.retry_ms = decoder.retry_ms
        finally:
            await chunks.aclose()

    async def _connection(
        self, session_id: str, cursor: _Cursor, stall_seconds: float
    ) -> AsyncGenerator[UpstreamEvent | LinkState, None]:
        """One connection: `LIVE`, then events. Returns normally only when the session
        ended (close, terminal status, 204 → `ENDED` yielded); anything else raises an
        `UpstreamError`, including EOF without `close` (`StreamDisconnected`)."""
        try:
            async with self._open_stream(session_id, cursor, stall_seconds) as response:
                if response is None:
                    yield LinkState(LinkStateName.ENDED, reason="no_content")
                    return
                yield LinkState(LinkStateName.LIVE)
                events = self._read_events(response, session_id, cursor, stall_seconds)
                async with aclosing(events):
                    async for event in events:
                        yield event
        except httpx.TransportError as exc:
            if not cursor.ended:
                raise _transport_failure(exc) from exc
        except StreamStalled:
            if not cursor.ended:
                raise
        else:
            if not cursor.ended:
                raise StreamDisconnected()
        yield LinkState(
            LinkStateName.ENDED, reason="closed" if cursor.closed else "terminal_status"
        )

    async def stream_status(
        self,
        session_id: str,
        *,
        last_event_id: str | None = None,
        stall_seconds: float | None = None,
    ) -> AsyncGenerator[UpstreamEvent, None]:
        """One connection to the status stream, no reconnects.

        Ends normally after `close`, after a terminal status (plus a short grace for its
        `close`), or on 204. Raises `UpstreamError` subclasses otherwise: `StreamDisconnected`
        when the stream ends without `close`, `StreamStalled` when it goes silent.
        """
        session_id = validate_session_id(session_id)
        cursor = _Cursor(last_event_id=last_event_id or "")
        stall = stall_seconds if stall_seconds is not None else self.stall_seconds
        async with aclosing(self._connection(session_id, cursor, stall)) as items:
            async for item in items:
                if not isinstance(item, LinkState):
                    yield item

    async def follow_status(
        self,
        session_id: str,
        *,
        stall_seconds: float,
        backoff: BackoffPolicy | None = None,
        last_event_id: str | None = None,
    ) -> AsyncGenerator[UpstreamEvent | LinkState, None]:
        """The resilient status stream: events interleaved with `LinkState` changes.

        `CONNECTING` before every attempt, `LIVE` on a 200 event stream, then events;
        `RETRYING(reason, retry_in)` before each wait. Reconnects after transport errors,
        EOF without `close`, stalls, 5xx, 429 and a wrong content type, with full-jitter
        backoff whose floor is `Retry-After` / `retry:`. On `close`, a terminal status or
        204 it yields `ENDED` and returns; on 404/422/401/403 (and other 4xx) it yields
        `FAILED` and raises the typed error. Close it with `aclosing()` to release the
        connection at once when you stop early.
        """
        try:
            session_id = validate_session_id(session_id)
        except InvalidSessionId as exc:
            yield LinkState(LinkStateName.FAILED, reason=exc.kind, error_code=exc.code)
            raise
        policy = backoff or self.backoff
        cursor = _Cursor(last_event_id=last_event_id or "")
        attempt = 0
        while True:
            yield LinkState(LinkStateName.CONNECTING)
            live_since: float | None = None
            try:
                async with aclosing(self._connection(session_id, cursor, stall_seconds)) as items:
                    async for item in items:
                        if isinstance(item, LinkState) and item.state is LinkStateName.LIVE:
                            live_since = time.monotonic()
                        yield item
                return
            except UpstreamError as exc:
                failure = exc
            if failure.permanent:
                yield LinkState(
                    LinkStateName.FAILED,
                    reason=failure.kind,
                    error_code=failure.code,
                    last_byte_at=cursor.last_byte_at,
                )
                raise failure
            if (
                live_since is not None
                and time.monotonic() - live_since >= policy.reset_after_healthy
            ):
                attempt = 0
            floor = max(failure.retry_after or 0.0, cursor.retry_floor())
            delay = policy.delay(attempt, floor=floor, rng=self._rng)
            attempt += 1
            self.metrics.reconnects[failure.kind] += 1
            yield LinkState(
                LinkStateName.RETRYING,
                reason=failure.kind,
                retry_in=delay,
                last_byte_at=cursor.last_byte_at,
            )
            await asyncio.sleep(delay)
