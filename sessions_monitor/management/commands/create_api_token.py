"""`python manage.py create_api_token USERNAME [--name NAME]`: the token is printed once,
as the last word of the last line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_monitor.tokens import create_token


class Command(BaseCommand):
    help = "Create an API token for reading /v1/meeting-buddy/sessions/<id>/stream."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to recognise the token by.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        token, plain = create_token(user=user, name=name)
        self.stdout.write(
            f"Created API token {token.prefix}… for {username}; it is shown only once."
        )
        self.stdout.write(f"Token: {plain}")
