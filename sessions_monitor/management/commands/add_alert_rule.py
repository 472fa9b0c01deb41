"""Add an alert rule from the command line: the same rules, and checks, as the admin's."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_monitor.alerts import rules
from sessions_monitor.models import AlertChannel, AlertRule, AlertTrigger

# Model field -> the option that sets it, to name the option in an error.
OPTION_OF_FIELD = {
    "name": "--name",
    "trigger": "--on",
    "status": "--status",
    "longer_than_seconds": "--longer-than",
    "error_code": "--error-code",
    "platform": "--platform",
    "bot_name_pattern": "--bot",
    "secret": "--secret",
}

SESSION_FILTERS = ("error_code", "platform", "bot")


class Command(BaseCommand):
    help = (
        "Add an alert rule: when (--on), which sessions (filters), and where to (--webhook URL "
        "or --email ADDRESS). Prints the rule's id, and the signing secret when it made one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--on", required=True, choices=[t.value for t in AlertTrigger])
        parser.add_argument("--status", default="", help="stuck: the status it is stuck in")
        parser.add_argument(
            "--longer-than",
            type=int,
            metavar="SECONDS",
            help="stuck, upstream_down: for longer than this many seconds",
        )
        parser.add_argument("--error-code", default="", help="only sessions failing with it")
        parser.add_argument("--platform", default="", help="only sessions on it (zoom, teams, …)")
        parser.add_argument("--bot", default="", metavar="PATTERN", help="bot name, e.g. Acme*")
        parser.add_argument("--name", default="", help="the rule's name in the admin")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--webhook", metavar="URL")
        where.add_argument("--email", metavar="ADDRESS")
        parser.add_argument("--secret", help="webhook: sign with this whsec_… secret")
        parser.add_argument("--format", choices=["json", "slack"], help="webhook: the body")

    def handle(self, *args: Any, **options: Any) -> None:
        fields = self._fields(options)
        try:
            AlertRule(**fields).clean_fields(exclude=["secret_encrypted", "secret_hint"])
            new = rules.create_rule(secret=options["secret"], **fields)
        except ValidationError as exc:
            raise CommandError(self._describe(exc, fields["channel"])) from None
        rule = new.rule
        self.stdout.write(f"Alert rule {rule.pk} added: {rule} ({rule.get_trigger_display()}).")
        if new.secret:
            self.stdout.write(
                "Signing secret (shown this once; it is stored encrypted): " + new.secret
            )

    def _fields(self, options: dict[str, Any]) -> dict[str, Any]:
        trigger = options["on"]
        if options["status"] and trigger != AlertTrigger.STUCK:
            raise CommandError("--status is for --on stuck only.")
        if options["longer_than"] is not None and trigger not in (
            AlertTrigger.STUCK,
            AlertTrigger.UPSTREAM_DOWN,
        ):
            raise CommandError("--longer-than is for --on stuck or --on upstream_down only.")
        if options["longer_than"] is not None and options["longer_than"] <= 0:
            raise CommandError("--longer-than must be a positive number of seconds.")
        if trigger == AlertTrigger.UPSTREAM_DOWN:
            used = [f"--{name.replace('_', '-')}" for name in SESSION_FILTERS if options[name]]
            if used:
                raise CommandError(f"{', '.join(used)}: upstream_down alerts are about no session.")
        if options["email"] is not None:
            if options["secret"] or options["format"]:
                raise CommandError("--secret and --format are for --webhook only.")
            channel, target = AlertChannel.EMAIL, options["email"]
        else:
            slack = options["format"] == "slack"
            channel = AlertChannel.SLACK if slack else AlertChannel.WEBHOOK
            target = options["webhook"]
        return {
            "name": options["name"],
            "trigger": trigger,
            "status": options["status"],
            "longer_than_seconds": options["longer_than"],
            "error_code": options["error_code"],
            "platform": options["platform"],
            "bot_name_pattern": options["bot"],
            "channel": channel,
            "target": target,
        }

    def _describe(self, exc: ValidationError, channel: str) -> str:
        if not hasattr(exc, "error_dict"):
            return " ".join(exc.messages)
        target_option = "--email" if channel == AlertChannel.EMAIL else "--webhook"
        parts = []
        for field, errors in exc.message_dict.items():
            option = OPTION_OF_FIELD.get(field, target_option if field == "target" else field)
            parts.append(f"{option}: {' '.join(errors)}")
        return " ".join(parts)
