from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sessions_monitor import health


@never_cache
@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    checks = {
        "database": await health.check_database(),
        "channel_layer": await health.check_channel_layer(),
    }
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"ok": ok, **checks}, status=200 if ok else 503)


@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    return HttpResponse("MeetingDash is running. The dashboard arrives with the relay.")
