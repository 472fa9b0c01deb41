"""The API for programs: start and stop bots, in the upstream's own shapes (issue 15).

`POST /v1/meeting-buddy/sessions` takes the §5.1 body and answers the upstream's Session JSON
with its status; `POST /v1/meeting-buddy/sessions/<id>/stop` likewise (§5.4). Errors use the
§7.1 envelope with our plain message. Statuses mirror the upstream's where they mean the same
thing for the caller (404, 422, 429 with `Retry-After`, 503); where they would not, they
become a gateway error: the upstream refusing *our* credentials (401/403) or failing (other
5xx) is 502, no answer at all is 503. A caller's 401/403 is always about its own API token.

Authentication is the API token only (`Authorization: Bearer mdk_…`, as on our stream): no
cookie session, so these csrf-exempt POSTs cannot be forged from a browser.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from sessions_monitor import control, tokens
from sessions_monitor.models import ControlOutcomeKind

VIA = "api"
START_FIELDS: dict[str, type] = {
    "meeting_link": str,
    "bot_name": str,
    "transcription_enabled": bool,
    "transcription_language": str,
}
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "client_error",
    422: "validation_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An answer in the error envelope, before the upstream was asked."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


@csrf_exempt
async def session_start(request: HttpRequest) -> HttpResponse:
    try:
        actor = await _authorized(request)
        fields = _start_fields(request.body)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    result = await control.asend_bot(actor=actor, via=VIA, **fields)
    return result_response(result)


@csrf_exempt
async def session_stop(request: HttpRequest, session_id: str) -> HttpResponse:
    try:
        actor = await _authorized(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    result = await control.astop_bot(actor=actor, via=VIA, session_id=session_id)
    return result_response(result)


# --- authentication ----------------------------------------------------------------------


async def _authorized(request: HttpRequest) -> AbstractBaseUser:
    """The token's user, allowed to operate bots; raises ApiError (405, 401, 403) otherwise.
    The method is checked first so a GET never costs a token look-up."""
    if request.method != "POST":
        raise ApiError(405, "METHOD_NOT_ALLOWED", "Use POST.", {"allowed": ["POST"]})
    user: AbstractBaseUser | None = await database_sync_to_async(token_user)(
        request.headers.get("Authorization", "")
    )
    if user is None:
        raise ApiError(401, "UNAUTHORIZED", "Send Authorization: Bearer <API token>.")
    if not await database_sync_to_async(control.can_control)(user):
        raise ApiError(403, "INSUFFICIENT_PERMISSIONS", "This token may not send or stop bots.")
    return user


def token_user(authorization: str) -> AbstractBaseUser | None:
    """The active user behind a `Bearer <API token>` header, or None."""
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    owner = tokens.authenticate(presented.strip())
    if owner is None:
        return None
    user: AbstractBaseUser | None = (
        get_user_model().objects.filter(pk=owner.user_id, is_active=True).first()
    )
    return user


# --- the request body --------------------------------------------------------------------


def _start_fields(body: bytes) -> dict[str, Any]:
    """The §5.1 fields asked for, type-checked; the link itself is the upstream's to judge."""
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "VALIDATION_ERROR", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "VALIDATION_ERROR", "The request body must be a JSON object.")
    unknown = sorted(set(payload) - set(START_FIELDS))
    if unknown:
        raise ApiError(
            422,
            "VALIDATION_ERROR",
            f"Unsupported fields: {', '.join(unknown)[:200]}.",
            {"fields": {name[:100]: "not supported here" for name in unknown[:20]}},
        )
    if "meeting_link" not in payload:
        raise _field_error("meeting_link", "meeting_link is required.")
    for name, kind in START_FIELDS.items():
        if name in payload and not isinstance(payload[name], kind):
            raise _field_error(name, f"{name} must be a {_json_type(kind)}.")
    return dict(payload)


def _field_error(name: str, message: str) -> ApiError:
    return ApiError(422, "VALIDATION_ERROR", message, {"field": name, "fields": {name: message}})


def _json_type(kind: type) -> str:
    return "boolean" if kind is bool else "string"


# --- answers -----------------------------------------------------------------------------


def result_response(result: control.ControlResult) -> HttpResponse:
    if result.ok:
        return JsonResponse(result.upstream_body, status=result.upstream_status or 200)
    status = api_status(result)
    details: dict[str, Any] = {}
    if result.session_id:
        details["session_id"] = result.session_id[:100]
    if result.field_errors:
        details["field"] = next(iter(result.field_errors))
        details["fields"] = dict(result.field_errors)
    code = result.audit.upstream_code or ("UPSTREAM_UNAVAILABLE" if status >= 500 else "REFUSED")
    if status == 502:
        code = "UPSTREAM_ERROR"
    response = error_response(status, code, result.message, details)
    if result.retry_after is not None and status in (429, 503):
        response["Retry-After"] = str(max(1, round(result.retry_after)))
    return response


def api_status(result: control.ControlResult) -> int:
    """Our status for a failed control call (see the module docstring)."""
    upstream = result.upstream_status
    if upstream is None:
        if result.outcome is ControlOutcomeKind.REFUSED:
            return 422 if result.audit.upstream_code == "INVALID_SESSION_ID_FORMAT" else 403
        return 503
    if upstream in (401, 403) or (upstream >= 500 and upstream != 503):
        return 502
    return upstream


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JsonResponse:
    """The §7.1 envelope."""
    body = {
        "success": False,
        "error": {
            "code": code,
            "message": message,
            "type": ERROR_TYPES.get(status, "client_error" if status < 500 else "server_error"),
            "status": status,
            "details": details or {},
            "trace_id": str(uuid.uuid4()),
            "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        },
    }
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="meetingdash"'
    if status == 405:
        response["Allow"] = "POST"
    return response
