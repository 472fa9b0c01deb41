"""Discovery: list the upstream's sessions and mark every non-terminal one watched."""

from __future__ import annotations

import logging
from collections.abc import Collection

from channels.db import database_sync_to_async

from sessions_monitor import services
from sessions_monitor.upstream import TERMINAL_STATUSES, MeetingBuddyClient, UpstreamSession

logger = logging.getLogger(__name__)


def _store_discovered(sessions: list[UpstreamSession]) -> list[str]:
    watched = []
    for session in sessions:
        try:
            services.upsert_session_metadata(
                session.session_id,
                bot_name=session.bot_name,
                meeting_link=session.meeting_link,
                platform=session.platform,
                created_at=session.created_at,
            )
        except services.InvalidSessionId:
            logger.warning("discovery: skipping malformed session id %r", session.session_id)
            continue
        services.mark_watched(session.session_id, True)
        watched.append(session.session_id)
    return watched


async def discover_sessions(client: MeetingBuddyClient, *, skip: Collection[str] = ()) -> list[str]:
    """Upsert metadata of non-terminal upstream sessions, mark them watched, return their ids.
    Sessions in `skip` (already followed here) are not written again."""
    sessions = await client.list_sessions()
    live = [s for s in sessions if s.status not in TERMINAL_STATUSES and s.session_id not in skip]
    if not live:
        return []
    return await database_sync_to_async(_store_discovered)(live)
