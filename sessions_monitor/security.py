"""HTTP-level protection that every route gets, Django's own and the plain ASGI ones alike.

Django's middleware only runs for Django views. Our stream (`streams.py`), the live sockets
and the embedded simulator are ASGI apps beside it, so what Django does for pages is done
here for them too: Host validation, the websocket Origin check (scheme, host and port),
HTTPS-only when configured, and the same response headers (nosniff, HSTS, CSP).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.http.request import split_domain_port, validate_host
from django.utils.decorators import sync_and_async_middleware

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Every page and the admin: our own static files only, no inline script or style, nothing
# framed from elsewhere and nobody frames us (the widget sets its own frame-ancestors).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'; object-src 'none'"
)
# Responses that are data, not pages (our stream, error envelopes).
DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def request_host(scope: Scope) -> str:
    """The Host the client asked for (with its port), as Django's `get_host()` reads it."""
    host = header(scope, b"host")
    if host:
        return host
    server = scope.get("server") or ("", None)
    return f"{server[0]}:{server[1]}" if server[1] else str(server[0])


def is_secure(scope: Scope) -> bool:
    """HTTPS (or WSS) as the client sees it: directly, or through a trusted proxy."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    return bool(
        settings.MEETINGDASH_PROXY_HEADERS
        and (header(scope, b"x-forwarded-proto") or "").strip().lower() == "https"
    )


def host_allowed(scope: Scope, extra_hosts: Iterable[str] = ()) -> bool:
    domain, _port = split_domain_port(request_host(scope))
    return bool(domain) and validate_host(domain, [*settings.ALLOWED_HOSTS, *extra_hosts])


class HostValidationMiddleware:
    """Refuse requests for a Host not in ALLOWED_HOSTS, on every route (Django's own check
    only covers Django views). `extra_hosts`: hosts this app also answers to (the loopback
    address `serve` gives the embedded relay for the embedded simulator)."""

    def __init__(self, app: ASGIApp, *, extra_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.extra_hosts = tuple(extra_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not host_allowed(scope, self.extra_hosts):
            logger.warning("refused a request for host %r", request_host(scope)[:100])
            await refuse(scope, send, 400, b"Bad Request: this host is not served here.\n")
            return
        await self.app(scope, receive, send)


async def refuse(scope: Scope, send: Send, status: int, body: bytes) -> None:
    """An HTTP error, or for a websocket a refused handshake (the browser sees HTTP 403)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *data_headers(scope)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port


def page_origin(scope: Scope) -> tuple[str, str, int] | None:
    """(scheme, host, port) of the page that may open a socket to this server."""
    return _origin("https" if is_secure(scope) else "http", request_host(scope))


def origin_allowed(scope: Scope) -> bool:
    """The socket's Origin is this server itself (scheme, host and port) or one of
    CSRF_TRUSTED_ORIGINS; browsers always send Origin on websocket handshakes."""
    raw = header(scope, b"origin")
    if not raw or raw == "null":
        return False
    try:
        parts = urlsplit(raw)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
        return False
    origin = _origin(parts.scheme, parts.netloc)
    if origin is None:
        return False
    if origin == page_origin(scope):
        return True
    trusted = (urlsplit(item) for item in settings.CSRF_TRUSTED_ORIGINS)
    return any(origin == _origin(item.scheme, item.netloc) for item in trusted)


class SameOriginWebsocketMiddleware:
    """Cross-site websocket hijacking guard: channels' AllowedHostsOriginValidator compares
    the host only, so any port (any other app on the same host) could open our sockets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            logger.info(
                "refused a websocket from origin %r", (header(scope, b"origin") or "")[:100]
            )
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


def data_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """What Django's SecurityMiddleware adds to pages, for responses outside Django."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", settings.SECURE_REFERRER_POLICY.encode()),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", DATA_CSP.encode()),
    ]
    hsts = int(getattr(settings, "SECURE_HSTS_SECONDS", 0) or 0)
    if hsts and is_secure(scope):
        value = f"max-age={hsts}"
        if getattr(settings, "SECURE_HSTS_INCLUDE_SUBDOMAINS", False):
            value += "; includeSubDomains"
        if getattr(settings, "SECURE_HSTS_PRELOAD", False):
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    return headers


def https_required(scope: Scope) -> bool:
    """SECURE_SSL_REDIRECT for routes outside Django: refuse (a redirect would have the
    client send its bearer token in clear text once more)."""
    return bool(getattr(settings, "SECURE_SSL_REDIRECT", False)) and not is_secure(scope)


@sync_and_async_middleware
def ContentSecurityPolicyMiddleware(  # noqa: N802 (Django middleware factory)
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """PAGE_CSP on every Django response that has no policy of its own (the widget does)."""

    def add_policy(response: HttpResponseBase) -> HttpResponseBase:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = PAGE_CSP
        return response

    if iscoroutinefunction(get_response):

        async def amiddleware(request: HttpRequest) -> HttpResponseBase:
            return add_policy(await get_response(request))

        return markcoroutinefunction(amiddleware)

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return add_policy(get_response(request))

    return middleware
