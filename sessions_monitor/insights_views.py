"""The Insights page (`/insights/`): what sessions did over a range, as charts and tables."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from sessions_monitor import insights_svg
from sessions_monitor.insights import filter_choices, parse_query, read_insights
from sessions_monitor.views import HtmxHttpRequest


@login_required
@require_GET
@vary_on_headers("HX-Request")
def insights(request: HtmxHttpRequest) -> HttpResponse:
    """The whole page, or (htmx, from the filter form) its results partial."""
    query = parse_query(request.GET.dict(), timezone.now())
    context = insights_svg.page_context(read_insights(query), filter_choices())
    template = "insights.html#results" if request.htmx else "insights.html"
    return render(request, template, context)
