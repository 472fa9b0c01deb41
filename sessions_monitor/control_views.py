"""The pages that operate bots: send one into a meeting, stop one (issue 15).

Thin on purpose: the permission, the form, one call to `control`, then a render or a
redirect. What was asked and what the upstream answered is recorded by `control` itself.
"""

from __future__ import annotations

import math
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from sessions_monitor import control, selectors
from sessions_monitor.forms import SendBotForm
from sessions_monitor.models import ControlOutcomeKind
from sessions_monitor.presentation import SessionView
from sessions_monitor.upstream import is_valid_session_id
from sessions_monitor.views import HtmxHttpRequest

VIA = "page"
SEND_TEMPLATE = "sessions_monitor/send_bot.html"
CONFIRM_TEMPLATE = "sessions_monitor/stop_confirm.html"
STOP_ANSWER = "sessions_monitor/control.html#stop-answer"


MESSAGE_LEVELS = {
    ControlOutcomeKind.DONE: messages.SUCCESS,
    ControlOutcomeKind.NO_OP: messages.INFO,
}


def see_other(url: str) -> HttpResponseRedirect:
    """303: after a POST the browser GETs the next page (a reload never re-sends the form)."""
    return HttpResponseRedirect(url, status=303)


@login_required
@permission_required(control.CONTROL_PERMISSION, raise_exception=True)
@require_http_methods(["GET", "POST"])
async def send_bot(request: HttpRequest) -> HttpResponse:
    """The "Send a bot" form; a sent bot's live page is the answer."""
    form = SendBotForm(request.POST if request.method == "POST" else None)
    problem, status, headers = "", 400 if form.is_bound else 200, {}
    if form.is_bound and form.is_valid():
        result = await control.asend_bot(actor=await _actor(request), via=VIA, **form.cleaned_data)
        if result.ok and result.session_id:
            messages.success(request, result.message)
            return see_other(reverse("session-detail", args=[result.session_id]))
        problem = apply_field_errors(form, result)
        if result.upstream_status == 429:
            status = 429
            if result.retry_after is not None:
                headers["Retry-After"] = str(math.ceil(result.retry_after))
    response = await sync_to_async(render)(
        request, SEND_TEMPLATE, {"form": form, "problem": problem}, status=status
    )
    for name, value in headers.items():
        response[name] = value
    return response


def apply_field_errors(form: SendBotForm, result: control.ControlResult) -> str:
    """Puts the upstream's per-field errors on the form's fields; returns what is left to
    say above the form ("" when the fields say it all)."""
    placed = False
    for name, error in result.field_errors.items():
        if name in form.fields:
            form.add_error(name, error)
            placed = True
    return "" if placed else result.message


@login_required
@permission_required(control.CONTROL_PERMISSION, raise_exception=True)
@require_http_methods(["GET", "POST"])
async def stop_bot(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    """GET: the confirmation page (the way without JavaScript). POST: stop the bot, then
    back to its live page with what happened (htmx: the tools and audit trail in place)."""
    session = await _session_or_404(session_id)
    if request.method == "GET":
        context = {"session": session}
        return await sync_to_async(render)(request, CONFIRM_TEMPLATE, context)
    result = await control.astop_bot(actor=await _actor(request), via=VIA, session_id=session_id)
    if request.htmx:
        context = await _stop_answer_context(request, session_id, result)
        return await sync_to_async(render)(request, STOP_ANSWER, context)
    messages.add_message(
        request, MESSAGE_LEVELS.get(result.outcome, messages.ERROR), result.message
    )
    return see_other(reverse("session-detail", args=[session_id]))


async def _actor(request: HttpRequest) -> AbstractBaseUser:
    """The logged-in user (the views require one)."""
    user = await request.auser()
    assert isinstance(user, AbstractBaseUser)
    return user


async def _session_or_404(session_id: str) -> SessionView:
    if not is_valid_session_id(session_id):
        raise Http404("That is not a session id.")
    session: SessionView | None = await database_sync_to_async(selectors.read_session)(session_id)
    if session is None:
        raise Http404("No such session here. Watch it by id from the session list.")
    return session


async def _stop_answer_context(
    request: HttpRequest, session_id: str, result: control.ControlResult
) -> dict[str, Any]:
    user = await request.auser()
    context: dict[str, Any] = await database_sync_to_async(control.detail_context)(user, session_id)
    context["session"] = await _session_or_404(session_id)
    context["stop_result"] = result
    context["time_zone"] = timezone.get_current_timezone_name()
    return context
