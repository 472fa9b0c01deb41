"""`python manage.py embed_token SESSION_ID [--days N]`: print the widget's <iframe> snippet."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_monitor import embed
from sessions_monitor.models import MeetingSession
from sessions_monitor.upstream.errors import InvalidSessionId
from sessions_monitor.upstream.ids import validate_session_id


class Command(BaseCommand):
    help = "Print a ready-to-paste <iframe> snippet for one session's live status widget."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_id")
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"Days until the link expires (default MEETINGDASH_EMBED_TOKEN_DAYS, "
            f"now {embed.default_days()}).",
        )
        parser.add_argument(
            "--base-url",
            default=settings.MEETINGDASH_PUBLIC_URL,
            help="Where MeetingDash is reachable from the embedding pages "
            "(default MEETINGDASH_PUBLIC_URL).",
        )

    def handle(
        self, *args: Any, session_id: str, days: int | None, base_url: str, **_: Any
    ) -> None:
        try:
            validate_session_id(session_id)
        except InvalidSessionId:
            raise CommandError(f"not a session id: {session_id!r}") from None
        try:
            snippet = embed.iframe_snippet_for_base(base_url, session_id, days=days)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not MeetingSession.objects.filter(pk=session_id).exists():
            self.stderr.write(
                f"note: {session_id} is not stored yet; the widget shows it once it is watched."
            )
        self.stdout.write(snippet)
