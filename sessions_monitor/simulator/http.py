"""Minimal ASGI HTTP helpers for the simulator: requests, JSON responses, error envelopes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from .scenarios import format_timestamp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20

ERROR_MESSAGES: dict[str, str] = {
    "SESSION_NOT_FOUND": "Meeting Buddy session not found",
    "INVALID_SESSION_ID_FORMAT": "Session id must start with 'mbsess_'",
    "AUTHENTICATION_REQUIRED": "Authentication is required to access this resource",
    "TOKEN_INVALID": "The access token is invalid",
    "NOT_FOUND": "The requested resource was not found",
    "METHOD_NOT_ALLOWED": "This method is not allowed for the requested resource",
    "VALIDATION_ERROR": "The request is invalid",
    "CONFLICT": "The request conflicts with the current state of the resource",
    "RATE_LIMIT_EXCEEDED": "Too many requests, please retry later",
    "SERVICE_UNAVAILABLE": "The service is temporarily unavailable, please retry later",
    "INTERNAL_SERVER_ERROR": "An internal error occurred",
    "BAD_GATEWAY": "The upstream service returned an invalid response",
    "GATEWAY_TIMEOUT": "The upstream service did not answer in time",
}

STATUS_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "AUTHENTICATION_REQUIRED",
    403: "INSUFFICIENT_PERMISSIONS",
    404: "NOT_FOUND",
    409: "CONFLICT",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


@dataclass(slots=True)
class Request:
    scope: Scope
    receive: Receive

    @property
    def method(self) -> str:
        return str(self.scope["method"]).upper()

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def root_path(self) -> str:
        return str(self.scope.get("root_path", ""))

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.scope.get("headers", []):
            if key.lower() == wanted:
                return bytes(value).decode("latin-1")
        return None

    def query(self) -> dict[str, list[str]]:
        return parse_qs(bytes(self.scope.get("query_string", b"")).decode("latin-1"))

    def query_value(self, name: str) -> str | None:
        values = self.query().get(name)
        return values[-1] if values else None

    async def body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ValueError("request body too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def json(self) -> Any:
        """The JSON body (None when empty); raises ValueError when it is not JSON."""
        raw = await self.body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("the request body is not valid JSON") from None


def json_response(
    data: Any, status: int = 200, *, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    body = json.dumps(data, ensure_ascii=False).encode()
    return Response(
        status,
        body,
        [(b"content-type", b"application/json"), *(headers or [])],
    )


def error_envelope(
    status: int,
    code: str | None = None,
    *,
    message: str | None = None,
    details: dict[str, Any] | None = None,
    system_message: str | None = None,
    trace_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The provider's error body (upstream-api.md §7.1)."""
    code = code or STATUS_CODES.get(status, "ERROR")
    return {
        "success": False,
        "error": {
            "code": code,
            "message": message or ERROR_MESSAGES.get(code, "The request failed"),
            "system_message": system_message or f"{status} {code}",
            "type": "client_error" if status < 500 else "server_error",
            "status": status,
            "details": details or {},
            "trace_id": trace_id or str(uuid.uuid4()),
            "timestamp": format_timestamp(now or datetime.now(UTC)),
        },
    }


def error_response(
    status: int,
    code: str | None = None,
    *,
    message: str | None = None,
    details: dict[str, Any] | None = None,
    system_message: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Response:
    envelope = error_envelope(
        status, code, message=message, details=details, system_message=system_message
    )
    trace = envelope["error"]["trace_id"].encode()
    return json_response(envelope, status, headers=[(b"x-request-id", trace), *(headers or [])])
