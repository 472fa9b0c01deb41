"""Follow and unfollow (a session, or every session of a bot name), and the Following page.

The buttons are forms: with htmx a POST answers the button again (its new state), without
JavaScript it redirects back to the page it came from. A POST may say which state it wants
(`follow=1` or `0`, what the buttons send: a double click or a resent form changes nothing);
without it, it toggles.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from sessions_monitor import follows
from sessions_monitor.upstream import is_valid_session_id

BUTTONS = "follows/buttons.html"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@login_required
@require_POST
def session_follow(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    if not is_valid_session_id(session_id):
        raise Http404("That is not a session id.")
    bot_name = follows.session_bot_name(session_id)
    if bot_name is None:
        raise Http404("No such session here.")
    user_id = _user_id(request)
    wanted = _wanted(request)
    if wanted is None:
        followed = follows.toggle_session_follow(user_id=user_id, session_id=session_id)
    else:
        followed = follows.set_session_follow(user_id=user_id, session_id=session_id, follow=wanted)
    if request.htmx:
        context = {
            **_button_context(request),
            "follow_session_id": session_id,
            "session_followed": followed,
        }
        return render(request, f"{BUTTONS}#session-follow", context)
    return _back(request, reverse("session-detail", args=[session_id]))


@login_required
@require_POST
def bot_follow(request: HtmxHttpRequest) -> HttpResponse:
    user_id = _user_id(request)
    wanted = _wanted(request)
    try:
        name = follows.clean_bot_name(request.POST.get("bot_name", ""))
        if wanted is None:
            followed = follows.toggle_bot_follow(user_id=user_id, bot_name=name)
        else:
            followed = follows.set_bot_follow(user_id=user_id, bot_name=name, follow=wanted)
    except follows.BadBotName:
        return HttpResponseBadRequest(
            f"A bot name is 1 to {follows.BOT_NAME_MAX} characters.", content_type="text/plain"
        )
    if request.htmx:
        context = {**_button_context(request), "follow_bot_name": name, "bot_followed": followed}
        return render(request, f"{BUTTONS}#bot-follow", context)
    return _back(request, reverse("follows"))


@login_required
@require_GET
def following(request: HttpRequest) -> HttpResponse:
    context = {"following": follows.following(_user_id(request)), "next": request.get_full_path()}
    return render(request, "follows/following.html", context)


def _user_id(request: HttpRequest) -> int:
    """The signed-in user's id (every view here is `login_required`)."""
    return cast(int, request.user.pk)


def _wanted(request: HttpRequest) -> bool | None:
    value = request.POST.get("follow")
    return {"1": True, "0": False}.get(value or "")


def _button_context(request: HttpRequest) -> dict[str, Any]:
    return {"next": _safe_next(request) or ""}


def _safe_next(request: HttpRequest) -> str | None:
    target = request.POST.get("next", "")
    allowed = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if target and allowed else None


def _back(request: HttpRequest, default: str) -> HttpResponse:
    return redirect(_safe_next(request) or default)
