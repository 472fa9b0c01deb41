from __future__ import annotations

from django.apps import AppConfig


class SessionsMonitorConfig(AppConfig):
    name = "sessions_monitor"
    verbose_name = "Meeting sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sessions_monitor import checks  # noqa: F401 (registers the system checks)
