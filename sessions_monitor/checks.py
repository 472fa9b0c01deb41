"""System checks (`manage.py check --deploy`) for what only MeetingDash knows is unsafe."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_simulator(app_configs: Any = None, **kwargs: Any) -> list[Warning | Error]:
    problems: list[Warning | Error] = []
    if settings.MEETINGDASH_SIMULATOR and not settings.MEETINGBUDDY_API_URL:
        problems.append(
            Warning(
                "The built-in upstream simulator is mounted (MEETINGDASH_SIMULATOR=1, no "
                "MEETINGBUDDY_API_URL): the dashboard shows simulated sessions.",
                hint="Set MEETINGBUDDY_API_URL to follow Meeting Buddy, and unset "
                "MEETINGDASH_SIMULATOR.",
                id="meetingdash.W001",
            )
        )
        if not settings.MEETINGDASH_SIMULATOR_TOKEN:
            problems.append(
                Error(
                    "The built-in simulator would answer anyone: `serve` refuses to start it "
                    "with DJANGO_DEBUG=0 and no MEETINGDASH_SIMULATOR_TOKEN.",
                    id="meetingdash.E001",
                )
            )
        if os.getenv("MEETINGDASH_SIMULATOR_CONTROL") == "1":
            problems.append(
                Warning(
                    "The simulator's /_control/ API (no authentication) is on.",
                    hint="Unset MEETINGDASH_SIMULATOR_CONTROL.",
                    id="meetingdash.W002",
                )
            )
    return problems


@register(Tags.security, deploy=True)
def check_demo_alerts(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if settings.MEETINGDASH_DEMO_ALERTS and not settings.DEBUG:
        return [
            Warning(
                "The demo alert receiver is mounted (MEETINGDASH_DEMO_ALERTS=1): "
                "/_demo/alerts/receive accepts webhooks and shows them to every logged-in user.",
                hint="Unset MEETINGDASH_DEMO_ALERTS; it is for `make demo`.",
                id="meetingdash.W003",
            )
        ]
    return []
