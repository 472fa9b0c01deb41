"""Typed upstream failures, built from the §7.1 error envelope or from the bare status code.

Every exception carries `.code` (UPPER_SNAKE_CASE), `.status` (HTTP status or None),
`.message` (safe to show) and `.retry_after` (seconds, when the upstream asked for a pause).
Messages never contain the API token: `error_from_response` scrubs it from anything the
upstream echoes back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

MAX_RETRY_AFTER_SECONDS = 3600.0
_REDACTED = "[redacted]"


class UpstreamError(Exception):
    """Base class: anything the upstream client raises is one of these."""

    kind: ClassVar[str] = "upstream_error"
    default_code: ClassVar[str] = "UPSTREAM_ERROR"
    default_message: ClassVar[str] = "The upstream request failed."
    #: True = retrying cannot help (404, 422, 401, 403, other 4xx).
    permanent: ClassVar[bool] = True

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.status = status
        self.retry_after = retry_after
        self.details: dict[str, Any] = dict(details or {})
        self.trace_id = trace_id
        super().__init__(self.message)

    def __str__(self) -> str:
        status = f" HTTP {self.status}" if self.status is not None else ""
        return f"{self.code}{status}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class SessionNotFound(UpstreamError):
    kind = "not_found"
    default_code = "SESSION_NOT_FOUND"
    default_message = "The session does not exist upstream."


class InvalidSessionId(UpstreamError, ValueError):
    """The one malformed-id error: raised by `ids.validate_session_id` before any request
    or write (status None), and for the upstream's 422. A ValueError too, as a bad
    argument is."""

    kind = "invalid_session_id"
    default_code = "INVALID_SESSION_ID_FORMAT"
    default_message = "The session id is not a valid Meeting Buddy session id."


class Unauthorized(UpstreamError):
    kind = "unauthorized"
    default_code = "AUTHENTICATION_REQUIRED"
    default_message = "The upstream rejected our credentials."


class Forbidden(UpstreamError):
    kind = "forbidden"
    default_code = "ACCESS_DENIED"
    default_message = "The upstream denied access to this resource."


class ClientError(UpstreamError):
    """Any other 4xx: our request is wrong; repeating it will not help."""

    kind = "client_error"
    default_code = "CLIENT_ERROR"
    default_message = "The upstream rejected the request."


class RateLimited(UpstreamError):
    kind = "rate_limited"
    default_code = "RATE_LIMITED"
    default_message = "The upstream is rate limiting us."
    permanent = False


class UpstreamUnavailable(UpstreamError):
    """5xx, or no HTTP answer at all (status None, code TRANSPORT_ERROR)."""

    kind = "unavailable"
    default_code = "UPSTREAM_UNAVAILABLE"
    default_message = "The upstream is unavailable."
    permanent = False


class WrongContentType(UpstreamError):
    """A 200 stream response that is not `text/event-stream` (e.g. a proxy's HTML page)."""

    kind = "wrong_content_type"
    default_code = "WRONG_CONTENT_TYPE"
    default_message = "The upstream stream did not answer with text/event-stream."
    permanent = False


class MalformedResponse(UpstreamError):
    """A 2xx REST answer whose body is not the documented JSON."""

    kind = "malformed_response"
    default_code = "MALFORMED_RESPONSE"
    default_message = "The upstream answered with a body we cannot read."
    permanent = False


class StreamStalled(UpstreamError):
    """No bytes at all (keepalives included) for the stall window."""

    kind = "stall"
    default_code = "STREAM_STALLED"
    default_message = "The upstream stream went silent."
    permanent = False


class StreamDisconnected(UpstreamError):
    """The stream ended (EOF or transport error) before a `close` event or terminal status."""

    kind = "disconnected"
    default_code = "STREAM_DISCONNECTED"
    default_message = "The upstream stream ended without a close event."
    permanent = False


_BY_STATUS: dict[int, type[UpstreamError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: SessionNotFound,
    422: InvalidSessionId,
    429: RateLimited,
}


def error_class_for_status(status: int) -> type[UpstreamError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return UpstreamUnavailable
    if status == 408:
        return UpstreamUnavailable
    return ClientError


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP-date; clamped to [0, 1 h]."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _scrub(value: Any, secret: str) -> Any:
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, _REDACTED)
    if isinstance(value, Mapping):
        return {str(k): _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secret) for v in value]
    return value


def _envelope(body: bytes) -> Mapping[str, Any]:
    """The `error` object of the §7.1 envelope, or the older `{detail, ...}` shape, or {}."""
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(payload, dict):
        return {}
    error = payload.get("error")
    if isinstance(error, dict):
        return error
    detail = payload.get("detail")
    if isinstance(detail, str):
        return {"message": detail}
    return {}


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str = "",
) -> UpstreamError:
    """Map an error response to a typed exception. `secret` (the token) is scrubbed out."""
    envelope = _envelope(body)
    cls = error_class_for_status(status)
    code = envelope.get("code")
    message = envelope.get("message")
    details = envelope.get("details")
    trace_id = envelope.get("trace_id")
    return cls(
        _scrub(message, secret) if isinstance(message, str) else "",
        code=_scrub(code, secret) if isinstance(code, str) and code else None,
        status=status,
        retry_after=parse_retry_after(headers.get("retry-after")),
        details=_scrub(details, secret) if isinstance(details, dict) else None,
        trace_id=trace_id if isinstance(trace_id, str) else None,
    )
