"""The simulator's pure ASGI app: the upstream routes (upstream-api.md) and `/_control/`.

List response shape (the SDK's, §5.2): `{"sessions": [...], "total", "page", "page_size",
"total_pages"}`; `page` is 1-based, `page_size` defaults to 20 (max 100), newest first.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sessions_monitor.upstream.ids import is_valid_session_id

from .faults import FaultState
from .http import (
    Message,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    error_response,
    json_response,
)
from .model import SessionConflict
from .scenarios import PLATFORMS, Step, detect_platform, step_from_dict
from .stream import failure_response, serve_stream

if TYPE_CHECKING:
    from .core import Simulator

logger = logging.getLogger("meetingdash.simulator")

Handler = Callable[..., Awaitable["Response | None"]]

API = "/v1/meeting-buddy"
SESSION = r"(?P<session_id>[^/]+)"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Route:
    pattern: re.Pattern[str]
    methods: dict[str, str]  # HTTP method -> handler method name on SimulatorApp
    control: bool = False


def _route(path: str, control: bool = False, **methods: str) -> Route:
    return Route(re.compile(path), methods, control)


ROUTES = (
    _route(rf"{API}/sessions", GET="list_sessions", POST="start_session"),
    _route(rf"{API}/sessions/{SESSION}", GET="get_session", DELETE="stop_session"),
    _route(rf"{API}/sessions/{SESSION}/stop", POST="stop_session"),
    _route(rf"{API}/sessions/{SESSION}/stream", GET="stream"),
    _route(rf"{API}/sessions/{SESSION}/transcripts", GET="transcripts"),
    _route(rf"{API}/analytics/active", GET="analytics_active"),
    _route(r"/_control/sessions", True, POST="control_create"),
    _route(rf"/_control/sessions/{SESSION}/emit", True, POST="control_emit"),
    _route(rf"/_control/sessions/{SESSION}", True, DELETE="control_forget"),
    _route(
        r"/_control/faults",
        True,
        GET="control_faults",
        POST="control_faults",
        DELETE="control_faults",
    ),
    _route(r"/_control/stats", True, GET="control_stats"),
    _route(r"/_control/eventsource-probe", True, GET="eventsource_probe"),
)


class SimulatorApp:
    """ASGI callable; everything it knows lives on the `Simulator`."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        request = Request(scope, receive)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            response = await self.dispatch(request, tracking_send)
        except Exception:
            logger.exception("simulator: %s %s failed", request.method, request.path)
            if started:
                raise
            response = error_response(500, "INTERNAL_SERVER_ERROR")
        if response is not None:
            await response.send(send)

    async def dispatch(self, request: Request, send: Send) -> Response | None:
        route, match = _match(request.path, control=self.simulator.control)
        if route is None or match is None:
            return error_response(404, "NOT_FOUND", details={"path": request.path})
        if not route.control:
            self.simulator.stats.requests_total += 1
        method = request.method if request.method != "HEAD" else "GET"
        name = route.methods.get(method)
        if name is None:
            allow = ", ".join(sorted(route.methods)).encode()
            return error_response(
                405,
                "METHOD_NOT_ALLOWED",
                details={"method": request.method, "allowed": sorted(route.methods)},
                headers=[(b"allow", allow)],
            )
        if not route.control:
            denied = self._authenticate(request)
            if denied is not None:
                return denied
        params = match.groupdict()
        session_id = params.get("session_id")
        if session_id is not None and not route.control and not is_valid_session_id(session_id):
            return error_response(
                422, "INVALID_SESSION_ID_FORMAT", details={"session_id": session_id}
            )
        handler: Handler = getattr(self, name)
        if name == "stream":
            return await handler(request, send, **params)
        return await handler(request, **params)

    def _authenticate(self, request: Request) -> Response | None:
        token = self.simulator.token
        if token is None:
            return None
        header = request.header("authorization")
        challenge = [(b"www-authenticate", b"Bearer")]
        if not header:
            return error_response(401, "AUTHENTICATION_REQUIRED", headers=challenge)
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or value.strip() != token:
            return error_response(401, "TOKEN_INVALID", headers=challenge)
        return None

    # -- upstream routes -----------------------------------------------------------------

    async def list_sessions(self, request: Request) -> Response:
        try:
            page = _int_param(request, "page", 1, minimum=1)
            page_size = _int_param(
                request, "page_size", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE
            )
        except ValueError as exc:
            field, _, message = str(exc).partition(":")
            return _validation_error(message.strip(), field=field)
        sessions = self.simulator.sessions(
            status=request.query_value("status") or None,
            search=request.query_value("search") or None,
        )
        start = (page - 1) * page_size
        now = self.simulator.now()
        return json_response(
            {
                "sessions": [
                    session.to_json(now) for session in sessions[start : start + page_size]
                ],
                "total": len(sessions),
                "page": page,
                "page_size": page_size,
                "total_pages": math.ceil(len(sessions) / page_size),
            }
        )

    async def start_session(self, request: Request) -> Response:
        injected = _control_failure(self.simulator.faults.global_state)
        if injected is not None:
            return injected
        try:
            body = await request.json()
        except ValueError as exc:
            return _validation_error(str(exc))
        if not isinstance(body, dict):
            return _validation_error("the request body must be a JSON object")
        link = body.get("meeting_link")
        if not isinstance(link, str) or not link:
            return _validation_error("meeting_link is required", field="meeting_link")
        platform = detect_platform(link)
        if platform is None:
            return _validation_error(
                "meeting_link must be an HTTPS link to Microsoft Teams, Zoom, Google Meet or Webex",
                field="meeting_link",
                value=link,
            )
        bot_name = body.get("bot_name", "Meeting Buddy")
        enabled = body.get("transcription_enabled", True)
        language = body.get("transcription_language", "en")
        for field, value, kind in (
            ("bot_name", bot_name, str),
            ("transcription_enabled", enabled, bool),
            ("transcription_language", language, str),
        ):
            if not isinstance(value, kind):
                return _validation_error(f"{field} must be a {kind.__name__}", field=field)
        session = self.simulator.create_session(
            meeting_link=link,
            bot_name=bot_name,
            platform=platform,
            transcription_enabled=enabled,
            transcription_language=language,
        )
        return json_response(session.to_json(self.simulator.now()), 201)

    async def get_session(self, request: Request, session_id: str) -> Response:
        self.simulator.stats.session_reads[session_id] += 1
        session = self.simulator.get(session_id)
        if session is None:
            return _not_found(session_id)
        return json_response(session.to_json(self.simulator.now()))

    async def stop_session(self, request: Request, session_id: str) -> Response:
        injected = _control_failure(self.simulator.faults.for_session(session_id))
        if injected is not None:
            return injected
        if self.simulator.get(session_id) is None:
            return _not_found(session_id)
        session = self.simulator.stop_session(session_id)
        return json_response(session.to_json(self.simulator.now()))

    async def stream(self, request: Request, send: Send, session_id: str) -> Response | None:
        self.simulator.stats.stream_connections_total[session_id] += 1
        if self.simulator.get(session_id) is None:
            return _not_found(session_id)
        raw_last_id = request.header("last-event-id") or ""
        await serve_stream(
            self.simulator,
            session_id,
            request.receive,
            send,
            last_event_id=int(raw_last_id) if raw_last_id.isdigit() else None,
        )
        return None

    async def transcripts(self, request: Request, session_id: str) -> Response:
        """§5.5: every segment so far as a bare array (empty with transcription off)."""
        self.simulator.stats.transcript_requests[session_id] += 1
        segments = self.simulator.transcript(session_id)
        if segments is None:
            return _not_found(session_id)
        return json_response(segments)

    async def analytics_active(self, request: Request) -> Response:
        now = self.simulator.now()
        return json_response([s.to_active_json(now) for s in self.simulator.active_sessions()])

    # -- control routes ----------------------------------------------------------------

    async def control_create(self, request: Request) -> Response:
        try:
            body = await request.json() or {}
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
            known = {"session_id", "bot_name", "platform", "meeting_link", "script", "manual"}
            known |= {"transcription_enabled", "transcription_language"}
            unknown = sorted(set(body) - known)
            if unknown:
                raise ValueError(f"unknown fields: {', '.join(unknown)}")
            platform = body.get("platform")
            if platform is not None and platform not in PLATFORMS:
                raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}")
            script = body.get("script")
            steps: list[Step] | None = None
            if script is not None:
                if not isinstance(script, list):
                    raise ValueError("script must be a list of steps")
                steps = [step_from_dict(step) for step in script]
            session = self.simulator.create_session(
                session_id=body.get("session_id"),
                meeting_link=body.get("meeting_link"),
                bot_name=body.get("bot_name"),
                platform=platform,
                script=steps,
                manual=bool(body.get("manual", False)),
                transcription_enabled=body.get("transcription_enabled") is not False,
                transcription_language=str(body.get("transcription_language") or "en"),
            )
        except SessionConflict as exc:
            return error_response(409, "CONFLICT", message=str(exc))
        except ValueError as exc:
            return _validation_error(str(exc))
        return json_response(session.to_json(self.simulator.now()), 201)

    async def control_emit(self, request: Request, session_id: str) -> Response:
        if self.simulator.get(session_id) is None:
            return _not_found(session_id)
        try:
            step = step_from_dict(await request.json() or {}, allow_after=False)
            events = self.simulator.apply_step(session_id, step)
        except SessionConflict as exc:
            return error_response(409, "CONFLICT", message=str(exc))
        except ValueError as exc:
            return _validation_error(str(exc))
        session = self.simulator.get(session_id)
        assert session is not None
        return json_response(
            {
                "session": session.to_json(self.simulator.now()),
                "events": [{"seq": e.seq, "event": e.name, "data": e.data} for e in events],
            }
        )

    async def control_forget(self, request: Request, session_id: str) -> Response:
        if not self.simulator.forget(session_id):
            return _not_found(session_id)
        return json_response({"forgotten": session_id})

    async def control_faults(self, request: Request) -> Response:
        faults = self.simulator.faults
        if request.method == "DELETE":
            faults.reset(request.query_value("session_id"))
        elif request.method == "POST":
            try:
                knobs = await request.json() or {}
                if not isinstance(knobs, dict):
                    raise ValueError("the request body must be a JSON object")
                session_id = knobs.pop("session_id", None)
                if session_id is not None and not isinstance(session_id, str):
                    raise ValueError("session_id must be a string")
                faults.set(session_id, **knobs)
            except ValueError as exc:
                return _validation_error(str(exc))
        return json_response(faults.describe())

    async def control_stats(self, request: Request) -> Response:
        return json_response(self.simulator.stats.to_json())

    async def eventsource_probe(self, request: Request) -> Response:
        session_id = request.query_value("session_id") or ""
        if not is_valid_session_id(session_id):
            return error_response(
                422, "INVALID_SESSION_ID_FORMAT", details={"session_id": session_id}
            )
        url = f"{request.root_path}{API}/sessions/{session_id}/stream"
        page = PROBE_PAGE.replace("__URL__", json.dumps(url))
        return Response(200, page.encode(), [(b"content-type", b"text/html; charset=utf-8")])


PROBE_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>EventSource probe</title></head>
<body data-state="connecting"><ol id="events"></ol>
<script>
const source = new EventSource(__URL__);
const list = document.getElementById("events");
function record(kind, data) {
  const item = document.createElement("li");
  item.dataset.event = kind;
  item.textContent = data;
  list.appendChild(item);
}
source.onopen = () => { document.body.dataset.state = "open"; };
source.addEventListener("status", (e) => record("status", e.data));
source.addEventListener("close", (e) => {
  record("close", e.data);
  source.close();
  document.body.dataset.state = "closed";
});
source.onerror = () => { document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1); };
</script></body></html>
"""


def _match(path: str, *, control: bool) -> tuple[Route | None, re.Match[str] | None]:
    for route in ROUTES:
        if route.control and not control:
            continue
        match = route.pattern.fullmatch(path)
        if match is not None:
            return route, match
    return None, None


def _int_param(
    request: Request, name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    raw = request.query_value(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {name} must be an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name}: {name} must be >= {minimum}{upper}")
    return value


def _control_failure(faults: FaultState) -> Response | None:
    """The `control_fail_next` knob's error for a start or stop call, if one is due."""
    failure = faults.take_control_fail()
    return None if failure is None else failure_response(failure)


def _not_found(session_id: str) -> Response:
    return error_response(404, "SESSION_NOT_FOUND", details={"session_id": session_id})


def _validation_error(message: str, *, field: str | None = None, value: Any = None) -> Response:
    details: dict[str, Any] = {}
    if field is not None:
        details["field"] = field
    if value is not None:
        details["value"] = value
    return error_response(422, "VALIDATION_ERROR", message=message, details=details)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
