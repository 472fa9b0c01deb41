"""Operating bots: send one into a meeting, stop one, and the audit trail of both (issue 15)."""

from __future__ import annotations

from typing import Any

from sessions_monitor.models import ControlAction

CONTROL_PERMISSION = "sessions_monitor.control_session"


def can_control(user: Any) -> bool:
    return bool(user.is_authenticated and user.has_perm(CONTROL_PERMISSION))


def detail_context(user: Any, session_id: str) -> dict[str, Any]:
    """What the detail page's control tools and audit trail need."""
    return {
        "can_control": can_control(user),
        "control_actions": list(ControlAction.objects.filter(session_id=session_id)),
    }
