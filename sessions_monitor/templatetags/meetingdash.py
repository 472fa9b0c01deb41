"""Formatting filters for the pages (display only: no decisions are made here)."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def absolute(moment: datetime | None) -> str:
    """The unambiguous form of a time: date, time to the second, and zone."""
    if moment is None:
        return ""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")
