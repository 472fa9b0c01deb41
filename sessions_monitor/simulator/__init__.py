"""The built-in Meeting Buddy upstream simulator (see upstream-api.md Part A/B)."""

from __future__ import annotations

from .core import Simulator
from .faults import Faults, FaultState

__all__ = ["FaultState", "Faults", "Simulator"]
