"""API tokens for programs reading our stream. Only a SHA-256 hash is stored; the plain
token is shown once, at creation. Tokens are 256-bit random, so a plain hash (no salt,
no slow KDF) is the right tool: lookups stay one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.db.models import Q
from django.utils import timezone

from sessions_monitor.models import ApiToken

TOKEN_PREFIX = "mdk_"
# last_used_at is a hint for admins, not an audit log: write it at most once a minute.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class TokenOwner:
    user_id: int
    username: str
    token_id: int


def hash_token(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def create_token(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plain token (never stored, never retrievable)."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, token_hash=hash_token(plain), prefix=plain[:12]
    )
    return token, plain


def authenticate(plain: str) -> TokenOwner | None:
    """The owner of an active token from an active user, or None."""
    if not plain or len(plain) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=hash_token(plain), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return TokenOwner(user_id=token.user.pk, username=token.user.get_username(), token_id=token.pk)


def revoke(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
