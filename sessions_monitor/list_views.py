"""The session list's CSV export: every session of the list's current filter, not just a page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from sessions_monitor.csv_export import sessions_csv_response
from sessions_monitor.list_filters import ListFilters


@login_required
@require_GET
def session_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """A refused parameter is a 400 that says which, never a file of something else."""
    filters = ListFilters.from_params(request.GET)
    if filters.errors:
        return HttpResponseBadRequest(
            " ".join(filters.errors), content_type="text/plain; charset=utf-8"
        )
    return sessions_csv_response(request, filters)
