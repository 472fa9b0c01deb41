"""Fitting outside text into our columns without losing an event over it.

Anyone in a meeting picks their own display name, and the upstream decides bot names, error
messages and payloads: any of them may be longer than a column, hold NUL bytes (PostgreSQL
refuses them in text) or lone surrogates (no UTF-8 encoding exists for them). Every stored
text goes through `fit()`: cleaned, and cut with a visible marker when too long. Raw payloads
are capped too, and the original length is kept in the marker. The limits are LIMITS
(documented in docs/relay.md).
"""

from __future__ import annotations

import json
from typing import Any, Final

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
    text = _clean(value)
    limit = LIMITS[field]
    if len(text) <= limit:
        return text
    marker = MARKER.format(length=len(text))
    return text[: max(0, limit - len(marker))] + marker


def fit_json(value: Any) -> Any:
    """A JSON value as PostgreSQL's jsonb takes it (no NUL, no lone surrogates in any
    string or key), and no bigger than the raw limit (else a note of how big it was)."""
    cleaned = _clean_json(value)
    length = len(json.dumps(cleaned, ensure_ascii=False))
    return cleaned if length <= LIMITS["raw"] else {"cut": True, "length": length}


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(key)): _clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(item) for item in value]
    return value


def _clean(text: str) -> str:
    text = text.replace("\x00", REPLACEMENT)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        text = _without_surrogates(text)
    return text


def was_cut(value: str) -> bool:
    return value.endswith(" characters]") and "…[cut, " in value
