"""`python manage.py revoke_widget_links SESSION_ID [...] | --all`: widget links made until
now stop working (open widgets close within one keepalive interval)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_monitor import services


class Command(BaseCommand):
    help = "Revoke the status widget links of some sessions, or of all of them (--all)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_ids", nargs="*", metavar="SESSION_ID")
        parser.add_argument("--all", action="store_true", help="every link of every session")

    def handle(self, *args: Any, session_ids: list[str], all: bool, **options: Any) -> None:
        if all == bool(session_ids):
            raise CommandError("Name one or more session ids, or pass --all (not both).")
        if all:
            services.revoke_widget_links(session_ids=None)
            self.stdout.write("Revoked every widget link.")
            return
        count = services.revoke_widget_links(session_ids=session_ids)
        self.stdout.write(f"Revoked the widget links of {count} of {len(session_ids)} session(s).")
        if count < len(session_ids):
            self.stderr.write("Sessions not stored here have no widget links to revoke.")
