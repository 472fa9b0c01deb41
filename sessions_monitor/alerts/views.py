"""The dashboard's read-only view of alerting: the rules (managed in the admin) and what
was sent lately, so staff can see what will tell them, and whether it did."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET

from sessions_monitor.alerts import selectors


@require_GET
@login_required
def alerts_overview(request: HttpRequest) -> HttpResponse:
    return TemplateResponse(
        request,
        "alerts/overview.html",
        {"overview": selectors.overview(), "can_manage": request.user.is_staff},
    )
