"""Transcripts: stored segments of a session, read for its page (issue 15).

The relay polls `GET …/transcripts` (all segments every time) and stores the new ones here;
a segment is stored once per (session, transcript_id), whoever polls it and how often.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from sessions_monitor import messages
from sessions_monitor.models import MeetingSession, TranscriptSegment
from sessions_monitor.textfit import fit
from sessions_monitor.upstream.models import UpstreamTranscriptSegment

# Column sizes (models.TranscriptSegment): a longer id could not be stored once, so such a
# segment is not stored at all; a longer language code is cut.
MAX_ID = 128
MAX_LANGUAGE = 20
# Segments per hub message: the first poll after a take-over may bring a whole meeting.
BROADCAST_BATCH = 100

logger = logging.getLogger(__name__)


def read_transcript(session_id: str) -> list[TranscriptSegment]:
    rows = TranscriptSegment.objects.filter(session_id=session_id)
    return list(rows.order_by("start_time", "transcript_id"))


def plain_segment(segment: TranscriptSegment) -> dict[str, Any]:
    """What the page shows of a segment, as plain JSON (the hub message carries it)."""
    return {
        "transcript_id": segment.transcript_id,
        "speaker": segment.speaker,
        "text": segment.text,
        "start_time": segment.start_time,
        "offset": offset_label(segment.start_time),
    }


def offset_label(seconds: float) -> str:
    """`mm:ss` from the session's start (`h:mm:ss` past an hour)."""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def watermark(segment: dict[str, Any]) -> tuple[float, str]:
    """The order of segments on the page: a page holding up to `w` needs those after it."""
    return (float(segment["start_time"]), str(segment["transcript_id"]))


def transcription_enabled(session_id: str) -> bool:
    """What the last upstream session object says; on unless it says off (the default)."""
    raw = MeetingSession.objects.filter(pk=session_id).values_list("raw", flat=True).first()
    return not (isinstance(raw, dict) and raw.get("transcription_enabled") is False)


def detail_context(session_id: str) -> dict[str, Any]:
    """What the detail page's transcript section needs."""
    return {
        "transcript": [plain_segment(row) for row in read_transcript(session_id)],
        "transcription_enabled": transcription_enabled(session_id),
    }


def store_segments(
    session_id: str, segments: Iterable[UpstreamTranscriptSegment]
) -> list[TranscriptSegment]:
    """Store the segments not stored yet (one bulk insert); returns those, in start order.

    A session we do not hold is skipped (nothing to attach its transcript to). Known ids are
    read first, so a repeated poll writes nothing; `ignore_conflicts` covers a segment
    stored meanwhile by a relay that took the session over.
    """
    incoming = {s.transcript_id: s for s in segments if len(s.transcript_id) <= MAX_ID}
    if not incoming or not MeetingSession.objects.filter(pk=session_id).exists():
        return []
    with transaction.atomic():
        known = set(
            TranscriptSegment.objects.filter(
                session_id=session_id, transcript_id__in=list(incoming)
            ).values_list("transcript_id", flat=True)
        )
        rows = [_row(session_id, s) for tid, s in incoming.items() if tid not in known]
        rows.sort(key=lambda row: (row.start_time, row.transcript_id))
        TranscriptSegment.objects.bulk_create(rows, ignore_conflicts=True)
    return rows


def _row(session_id: str, segment: UpstreamTranscriptSegment) -> TranscriptSegment:
    return TranscriptSegment(
        session_id=session_id,
        transcript_id=segment.transcript_id,
        text=fit(segment.text, "note"),
        start_time=segment.start_time,
        end_time=segment.end_time,
        speaker=fit(segment.speaker, "participant_name"),
        confidence=segment.confidence,
        language_code=fit(segment.language_code, "note")[:MAX_LANGUAGE],
        created_at=segment.created_at,
    )


async def astore_segments(
    session_id: str, segments: Iterable[UpstreamTranscriptSegment]
) -> list[TranscriptSegment]:
    stored: list[TranscriptSegment] = await database_sync_to_async(store_segments)(
        session_id, list(segments)
    )
    return stored


async def adetail_context(session_id: str) -> dict[str, Any]:
    context: dict[str, Any] = await database_sync_to_async(detail_context)(session_id)
    return context


async def abroadcast_segments(session_id: str, rows: list[TranscriptSegment]) -> bool:
    """Tell this session's viewers about newly stored segments. Never raises: a page that
    misses them gets them with its next resync or reconnect, which re-read the transcript."""
    layer = get_channel_layer()
    plain = [plain_segment(row) for row in rows]
    try:
        assert layer is not None, "no channel layer configured"
        for start in range(0, len(plain), BROADCAST_BATCH):
            batch = plain[start : start + BROADCAST_BATCH]
            message = messages.transcript_message(session_id=session_id, segments=batch)
            await layer.group_send(messages.session_group(session_id), message)
    except Exception as exc:
        logger.warning("transcript broadcast of %s failed (%s)", session_id, type(exc).__name__)
        return False
    return True
