"""Session ids: the one pattern and validator, used before any request (so a bad id never
reaches a URL), before any write, and by the simulator."""

from __future__ import annotations

import re

from .errors import InvalidSessionId

# Only the prefix is documented (upstream-api.md §2); the rest is our safe, bounded choice.
SESSION_ID_PATTERN = r"mbsess_[A-Za-z0-9_-]{1,64}"
SESSION_ID_RULE = "'mbsess_' followed by 1 to 64 letters, digits, '_' or '-'"
# `fullmatch` with an explicit ASCII class: no `$`-before-newline trap, no Unicode digits.
_SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)


def is_valid_session_id(value: object) -> bool:
    return isinstance(value, str) and _SESSION_ID_RE.fullmatch(value) is not None


def validate_session_id(value: object) -> str:
    """Return `value` unchanged if it is `mbsess_` + 1..64 of `[A-Za-z0-9_-]`, else raise."""
    if is_valid_session_id(value):
        assert isinstance(value, str)
        return value
    shown = repr(value)[:80]
    raise InvalidSessionId(f"Session ids look like {SESSION_ID_RULE}; got {shown}.", status=None)
