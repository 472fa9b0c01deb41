"""Simulated live transcription (upstream-api.md §5.5): pure, no IO, no clock of its own.

A session's meeting time (from its `join_timestamp`, in scenario seconds) is cut into slots
of SLOT_SECONDS. A slot becomes a segment when it ends while the session is in the meeting
(`active`/`recording`) and someone is present: the speaker is one of them, the words come
from the session id and the slot number, so the same session always says the same thing.

`TranscriptTrack.advance(session, until)` is called before every change of the session
(who is present and the status are constant between two changes) and before every read,
so each slot is decided with the status and people of its own moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .scenarios import format_timestamp

if TYPE_CHECKING:
    from .model import SimSession

SLOT_SECONDS = 4.0
IN_MEETING = frozenset({"active", "recording"})

OPENERS = ("So", "Okay,", "Right,", "I think", "Honestly,", "Quick update:", "Well,", "Yes,")
SUBJECTS = (
    "the release",
    "the budget",
    "our roadmap",
    "the customer call",
    "the migration",
    "the onboarding flow",
    "the test plan",
    "next sprint",
)
VERBS = ("looks good", "needs another review", "is on track", "slipped a week", "is blocked")
TAILS = ("for now.", "as far as I know.", "and I will follow up.", "— any questions?", ".")


def segment_text(rng: random.Random) -> str:
    words = f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(TAILS)}"
    return words.replace(" .", ".")


@dataclass(slots=True)
class TranscriptTrack:
    """The segments of one session so far; `speed` is the simulator's speed factor."""

    speed: float = 1.0
    segments: list[dict[str, Any]] = field(default_factory=list)
    next_slot: int = 0

    def advance(self, session: SimSession, until: datetime) -> None:
        """Decide every slot that ended by `until`, with the session as it is now."""
        join = session.join_timestamp
        if join is None or session.is_terminal:
            return
        elapsed = (until - join).total_seconds() * self.speed
        ended = max(0, int(elapsed // SLOT_SECONDS))
        speaking = session.transcription_enabled and session.status in IN_MEETING
        while self.next_slot < ended:
            if speaking and session.participants:
                self.segments.append(self._segment(session, self.next_slot, join))
            self.next_slot += 1

    def _segment(self, session: SimSession, slot: int, join: datetime) -> dict[str, Any]:
        rng = random.Random(f"{session.session_id}:transcript:{slot}")
        start = slot * SLOT_SECONDS + round(rng.uniform(0.0, 0.5), 2)
        end = round(start + rng.uniform(2.0, SLOT_SECONDS - 0.6), 2)
        spoken_at = join + timedelta(seconds=end / self.speed)
        return {
            "transcript_id": f"mbtrans_{session.session_id.removeprefix('mbsess_')}_{slot:05d}",
            "text": segment_text(rng),
            "confidence": round(rng.uniform(0.72, 0.99), 2),
            "start_time": start,
            "end_time": end,
            "speaker": rng.choice(sorted(session.participants)),
            "language_code": session.transcription_language,
            "created_at": format_timestamp(spoken_at),
        }
