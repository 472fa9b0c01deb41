"""Create (or reset) the demo login and print its password once."""

from __future__ import annotations

import os
import secrets
from typing import Any

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
