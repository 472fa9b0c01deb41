"""`python manage.py watch_session SESSION_ID`: ask the relay to watch a session (idempotent).

The watched flag is stored, so the relay picks it up on its next rescan even when the
request message cannot reach it (embedded relay in another process)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_monitor import services
from sessions_monitor.upstream.errors import InvalidSessionId


class Command(BaseCommand):
    help = "Ask the relay to watch a session."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_id")

    def handle(self, *args: Any, session_id: str, **options: Any) -> None:
        try:
            services.request_watch(session_id)
        except InvalidSessionId:
            raise CommandError(f"Not a session id: {session_id!r} (expected mbsess_…).") from None
        self.stdout.write(f"Watching {session_id}.")
