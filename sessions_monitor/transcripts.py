"""Transcripts: stored segments of a session, read for its page (issue 15)."""

from __future__ import annotations

from typing import Any

from sessions_monitor.models import TranscriptSegment


def read_transcript(session_id: str) -> list[TranscriptSegment]:
    return list(TranscriptSegment.objects.filter(session_id=session_id).order_by("start_time"))


def detail_context(session_id: str) -> dict[str, Any]:
    """What the detail page's transcript section needs."""
    return {"transcript": read_transcript(session_id)}
