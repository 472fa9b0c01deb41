# Requested and measured by ADMIN (bench/admin.py, 100k sessions / 1M events): pattern-ops
# indexes for the admin's case-insensitive prefix searches. PostgreSQL only (opclasses on
# expressions); SQLite skips them.
from django.db import migrations

INDEXES = [
    (
        "presence_name_upper_like",
        "sessions_monitor_presence",
        'UPPER("participant_name"::text) text_pattern_ops',
    ),
    (
        "event_participant_upper_like",
        "sessions_monitor_sessionevent",
        'UPPER("participant_name"::text) text_pattern_ops',
    ),
    (
        "session_bot_name_upper_like",
        "sessions_monitor_meetingsession",
        'UPPER("bot_name"::text) text_pattern_ops',
    ),
    (
        "session_meeting_link_like",
        "sessions_monitor_meetingsession",
        '"meeting_link" varchar_pattern_ops',
    ),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, table, expression in INDEXES:
            schema_editor.execute(
                f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({expression})'
            )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, _, _ in INDEXES:
            schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):
    dependencies = [("sessions_monitor", "0002_stream_error_code")]
    operations = [migrations.RunPython(create, drop)]
