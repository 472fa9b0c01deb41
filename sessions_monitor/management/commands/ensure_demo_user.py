"""Create (or reset) the demo login and print its password once."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the 'demo' staff user; its password is DEMO_PASSWORD or a random one, printed once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.getenv("DEMO_PASSWORD") or secrets.token_urlsafe(12)
        user, created = get_user_model().objects.get_or_create(username="demo")
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write(
            "\n  Demo login: username 'demo', password "
            f"'{password}'\n  Open http://127.0.0.1:8000/ once the server says it is serving.\n"
        )
        if settings.MEETINGDASH_DEMO_ALERTS:
            from sessions_monitor.alerts import demo

            demo.ensure_demo_rules()
            self.stdout.write(
                f"  Alerts of the rules “{demo.FAILURE_RULE}” and “{demo.STUCK_RULE}” arrive at "
                f"{settings.MEETINGDASH_PUBLIC_URL}{demo.PAGE_PATH} (rules: Admin → Alert rules).\n"
            )
