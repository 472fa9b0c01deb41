"""The relay's transcript poller: one per session the relay streams, none anywhere else.

The upstream has a transcript stream (§6.3) but its framing is barely documented, so we
poll `GET …/transcripts` (all segments each time) every MEETINGDASH_TRANSCRIPT_POLL_SECONDS
while the session's status stream is followed, and once more after the session ended.
The poller lives and dies with the follow task, which only the relay holding the session's
lease (and claim) runs: however many people watch, each session is polled once per interval
per deployment. A failed poll is logged and tried again at the next interval; it never
touches the status stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sessions_monitor import transcripts
from sessions_monitor.models import TranscriptSegment
from sessions_monitor.upstream import MeetingBuddyClient, UpstreamError

logger = logging.getLogger(__name__)
# The last poll after a session ended: bounded, so a hung upstream cannot hold the follow.
FINAL_POLL_SECONDS = 10.0


async def poll_once(client: MeetingBuddyClient, session_id: str) -> list[TranscriptSegment]:
    """Fetch the transcript, store what is new, tell the session's viewers; the new
    segments. Upstream errors are logged and answer []: the next interval tries again."""
    try:
        segments = await client.transcripts(session_id)
    except UpstreamError as exc:
        logger.warning("relay: transcript poll of %s failed: %s", session_id, exc)
        return []
    new = await transcripts.astore_segments(session_id, segments)
    if new:
        await transcripts.abroadcast_segments(session_id, new)
    return new


async def poll_every(
    client: Callable[[], MeetingBuddyClient], session_id: str, seconds: float
) -> None:
    """`poll_once` every `seconds` (a fixed rate: a slow poll does not push the next ones
    later; one that took longer than the interval is not made up for) until cancelled;
    nothing it raises ends the loop."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        try:
            await poll_once(client(), session_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "relay: transcript poll of %s broke; next in %.1fs", session_id, seconds
            )
        due = max(due + seconds, loop.time())
        await asyncio.sleep(due - loop.time())


class TranscriptPollers:
    """The poll loops of the sessions a relay follows, by session id, each owned by the
    follow task that started it (a follow that ends late never stops its successor's)."""

    def __init__(self, client: Callable[[], MeetingBuddyClient], seconds: float) -> None:
        self.make_client = client
        self.seconds = seconds
        self._tasks: dict[str, tuple[asyncio.Task[Any] | None, asyncio.Task[None]]] = {}

    def start(self, session_id: str) -> None:
        """Start polling for the calling follow task (replacing an earlier follow's loop)."""
        if self.seconds <= 0:
            return
        previous = self._tasks.pop(session_id, None)
        if previous is not None:
            previous[1].cancel()
        loop = asyncio.create_task(
            poll_every(lambda: self.make_client(), session_id, self.seconds),
            name=f"relay:transcript:{session_id}",
        )
        self._tasks[session_id] = (asyncio.current_task(), loop)

    async def stop(self, session_id: str) -> None:
        """End the session's loop. Called from the follow task as it ends: when it ended on
        its own (the session ended, or failed for good) rather than being cancelled (the
        relay let the session go), poll once more so the stored transcript is complete."""
        owner, task = self._tasks.get(session_id, (None, None))
        if task is None or owner is not asyncio.current_task():
            return
        del self._tasks[session_id]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if _being_cancelled():
            return
        try:
            async with asyncio.timeout(FINAL_POLL_SECONDS):
                await poll_once(self.make_client(), session_id)
        except Exception:
            logger.warning("relay: last transcript poll of %s failed", session_id, exc_info=True)

    def polling(self) -> list[str]:
        return [sid for sid, (_, task) in self._tasks.items() if not task.done()]


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
