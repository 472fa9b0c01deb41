"""Fitting outside text into our columns without losing an event over it.

Anyone in a meeting picks their own display name, and the upstream decides bot names, error
messages and payloads: any of them may be longer than a column, hold NUL bytes (PostgreSQL
refuses them in text) or lone surrogates (no UTF-8 encoding exists for them). Every stored
text goes through `fit()`: cleaned, and cut with a visible marker when too long. Raw payloads
are capped too, and the original length is kept in the marker. The limits are LIMITS
(documented in docs/relay.md).
"""

from __future__ import annotations

from typing import Final

# Column sizes (models.py) and the caps of unbounded text columns.
LIMITS: Final = {
    "participant_name": 300,
    "bot_name": 200,
    "meeting_link": 2000,
    "platform": 40,
    "status": 40,
    "error_code": 100,
    "error_message": 4000,
    "note": 4000,
    "stream_error": 2000,
    "raw": 64 * 1024,
}
MARKER = "…[cut, {length:,} characters]"
REPLACEMENT = "\ufffd"


def _without_surrogates(value: str) -> str:
    return "".join(REPLACEMENT if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)


def fit(value: str | None, field: str) -> str:
    """`value` cleaned and, past the field's limit, cut with a marker that says so."""
    if not value:
        return ""
    text = value.replace("\x00", REPLACEMENT)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        text = _without_surrogates(text)
    limit = LIMITS[field]
    if len(text) <= limit:
        return text
    marker = MARKER.format(length=len(text))
    return text[: max(0, limit - len(marker))] + marker


def was_cut(value: str) -> bool:
    return value.endswith(" characters]") and "…[cut, " in value
