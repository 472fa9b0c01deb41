"""The embeddable status widget and the staff snippet generator.

The widget is the one page that may be framed, and only by MEETINGDASH_EMBED_ORIGINS
(CSP frame-ancestors); every other page keeps X-Frame-Options: DENY. A token that is
missing, tampered, expired or made for another session gets a 403 page with no data.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET

from sessions_monitor import embed, presentation, selectors
from sessions_monitor.upstream.errors import InvalidSessionId
from sessions_monitor.upstream.ids import validate_session_id

BADGE_TEMPLATE = "sessions_monitor/embed.html#badge"
THEMES = ("auto", "light", "dark")


def badge_context(summary: dict[str, Any] | None, session_id: str) -> dict[str, Any]:
    """What the badge shows: a `session_summary` dict (or None before the first event)."""
    return {
        "session_id": session_id,
        "session": presentation.session_view(summary) if summary else None,
    }


def render_widget_badge(summary: dict[str, Any] | None, session_id: str) -> str:
    """The embeddable widget's badge (not the dashboard's upstream-link badge)."""
    return render_to_string(BADGE_TEMPLATE, badge_context(summary, session_id))


def _widget_security_headers(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; "
        f"frame-ancestors {embed.frame_ancestors()}"
    )
    # The token is in the URL: never send it onwards, never index it.
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _refused(request: HttpRequest) -> HttpResponse:
    response = render(request, "sessions_monitor/embed_refused.html", status=403)
    return _widget_security_headers(response)


@require_GET
@never_cache
@xframe_options_exempt
def session_widget(request: HttpRequest, session_id: str) -> HttpResponse:
    try:
        grant = embed.valid_grant(request.GET.get("token"), session_id)
    except embed.InvalidEmbedToken:
        return _refused(request)
    token = request.GET["token"]
    theme = request.GET.get("theme", "auto")
    context = {
        **badge_context(selectors.session_snapshot(grant.session_id), grant.session_id),
        "live_url": embed.live_path(grant.session_id, token),
        "theme": theme if theme in THEMES else "auto",
        # Opens the session page (which asks who you are): for embedders whose viewers log in.
        "show_link": request.GET.get("link") == "1",
        "session_url": request.build_absolute_uri(reverse("session-detail", args=[session_id])),
    }
    return _widget_security_headers(render(request, "sessions_monitor/embed.html", context))


def _requested_days(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", ""))
    except ValueError:
        return embed.default_days()
    return days if 0 < days <= embed.MAX_DAYS else embed.default_days()


EMBED_PERMISSION = "sessions_monitor.embed_session"


@require_GET
@never_cache
@login_required
@permission_required(EMBED_PERMISSION, raise_exception=True)
def session_snippet(request: HttpRequest, session_id: str) -> HttpResponse:
    """Mints a widget link on request (never as a side effect of viewing a page) and shows
    the ready-to-paste <iframe>; the partial alone for htmx requests."""
    try:
        validate_session_id(session_id)
    except InvalidSessionId:
        raise Http404("not a session id") from None
    days = _requested_days(request)
    url = request.build_absolute_uri(
        embed.widget_path(session_id, embed.make_token(session_id, days=days))
    )
    template = "sessions_monitor/embed_snippet.html"
    if getattr(request, "htmx", False):
        template += "#snippet"
    context = {
        "session_id": session_id,
        "snippet": embed.iframe_markup(url),
        "widget_url": url,
        "days": days,
        "origins": embed.allowed_origins(),
    }
    return render(request, template, context)
