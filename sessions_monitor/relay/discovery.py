"""Discovery: list the upstream's sessions and mark every non-terminal one watched."""

from __future__ import annotations

from collections.abc import Collection

from channels.db import database_sync_to_async

from sessions_monitor import lookups
from sessions_monitor.upstream import TERMINAL_STATUSES, MeetingBuddyClient


async def discover_sessions(client: MeetingBuddyClient, *, skip: Collection[str] = ()) -> list[str]:
    """Upsert metadata of non-terminal upstream sessions, mark them watched, return their ids.
    Sessions in `skip` (already followed here) are not written again."""
    sessions = await client.list_sessions()
    live = [s for s in sessions if s.status not in TERMINAL_STATUSES and s.session_id not in skip]
    if not live:
        return []
    stored: list[str] = await database_sync_to_async(lookups.store_sessions)(live, watch=True)
    return stored
