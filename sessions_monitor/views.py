from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from sessions_monitor import (
    control,
    follows,
    health,
    lookups,
    metrics,
    presentation,
    selectors,
    services,
    transcripts,
)
from sessions_monitor.forms import WatchForm
from sessions_monitor.list_filters import ListFilters
from sessions_monitor.process import relay_of
from sessions_monitor.upstream import is_valid_session_id


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@never_cache
@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    """`{"ok": …}` for anyone (load balancers); the checks' detail for staff and the
    metrics token. One report per process per second, however many ask."""
    report = await health.report(relay_of(request))
    user = await request.auser()
    if user.is_staff or metrics.bearer_is_metrics_token(request):
        body = report
    else:
        body = {"ok": report["ok"]}
    return JsonResponse(body, status=200 if report["ok"] else 503)


def _list_context(request: HttpRequest, watch_form: WatchForm | None = None) -> dict[str, Any]:
    filters = ListFilters.from_params(request.GET)
    return {
        **selectors.list_page(
            filter_name=filters.filter,
            query=filters.query,
            page_number=request.GET.get("page"),
            filters=filters,
        ),
        "watch_form": watch_form or WatchForm(),
        "live_url": presentation.LIVE_LIST_URL,
    }


# Fired after an htmx swap of the list: the page's live hello (in the swapped region) then
# tells the socket the new filters.
LIST_PARAMS_CHANGED = "list-params-changed"


@login_required
@require_GET
@vary_on_headers("HX-Request")
def session_list(request: HtmxHttpRequest) -> HttpResponse:
    template = "sessions_monitor/session_list.html"
    if not request.htmx:
        context = _list_context(request)
        context.update(selectors.list_tool_choices())
        return render(request, template, context)
    # The filter bar's swap: the list, and the chips (their links carry the filters).
    context = _list_context(request)
    html = render_to_string(f"{template}#list-region", context, request) + render_to_string(
        f"{template}#filter-chips", {**context, "oob": True}, request
    )
    response = HttpResponse(html)
    # The address bar gets the filters' own params (no empty fields, one spelling).
    tools = context["tools"]
    response["HX-Push-Url"] = reverse("session-list") + (
        f"?{tools.query_string}" if tools.query_string else ""
    )
    response["HX-Trigger-After-Settle"] = LIST_PARAMS_CHANGED
    return response


@login_required
@require_GET
@vary_on_headers("HX-Request")
def session_detail(request: HtmxHttpRequest, session_id: str) -> HttpResponse:
    if not is_valid_session_id(session_id):
        raise Http404("That is not a session id.")
    detail = selectors.read_detail(session_id)
    if detail is None:
        raise Http404("No such session here. Watch it by id from the session list.")
    template = "sessions_monitor/session_detail.html"
    if request.htmx:
        template += "#live-regions"
    context = presentation.detail_context(detail)
    context.update(transcripts.detail_context(session_id))
    context.update(control.detail_context(request.user, session_id))
    context.update(
        follows.detail_context(request.user.pk, detail.session, next=request.get_full_path())
    )
    return render(request, template, context)


LOOKUP_ERRORS = {
    lookups.Outcome.UNKNOWN: "Meeting Buddy has no session “{session_id}”. Check the id and try again.",
    lookups.Outcome.UNAVAILABLE: "Could not check this id with Meeting Buddy ({message}). Try again shortly.",
    lookups.Outcome.THROTTLED: "You asked for many unknown session ids in a short time. "
    "Try again in {retry_after} s.",
}


async def _check_upstream(request: HttpRequest, session_id: str) -> str | None:
    """None when the session is known (here, or upstream: it is then stored), else a
    message."""
    user = await request.auser()
    lookup = await lookups.ensure_known(session_id, credential=f"user:{user.pk}")
    if lookup.outcome is lookups.Outcome.KNOWN:
        return None
    return LOOKUP_ERRORS[lookup.outcome].format(
        session_id=session_id, message=lookup.message, retry_after=lookup.retry_after
    )


@login_required
@require_POST
async def session_watch(request: HtmxHttpRequest) -> HttpResponse:
    """Watch a session by id: malformed ids and ids unknown upstream get a clear error."""
    form = WatchForm(request.POST)
    if await sync_to_async(form.is_valid)():
        session_id = form.cleaned_data["session_id"]
        error = await _check_upstream(request, session_id)
        if error is None:
            await sync_to_async(services.request_watch)(session_id)
            url = reverse("session-detail", args=[session_id])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
        form.add_error("session_id", error)
    if request.htmx:
        # 200 so htmx swaps the form with its errors in place.
        return await sync_to_async(render)(
            request, "sessions_monitor/session_list.html#watch-form", {"watch_form": form}
        )
    context = await sync_to_async(_list_context)(request, form)
    return await sync_to_async(render)(
        request, "sessions_monitor/session_list.html", context, status=400
    )
