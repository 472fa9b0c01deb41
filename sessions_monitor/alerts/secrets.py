"""Webhook signing secrets (`whsec_<base64 key>`), stored encrypted.

A signing secret cannot be stored hashed: we sign with it. It is encrypted with a key
derived from DJANGO_SECRET_KEY (Fernet); SECRET_KEY_FALLBACKS still decrypt after a key
rotation. Shown once, when it is made (`add_alert_rule`, the admin's message), then only as
its hint.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

PREFIX = "whsec_"
KEY_BYTES = 24


class SecretUnreadable(Exception):
    """The stored secret was encrypted with a key this deployment no longer has."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def is_valid(secret: str) -> bool:
    if not secret.startswith(PREFIX):
        return False
    try:
        return len(base64.b64decode(secret[len(PREFIX) :], validate=True)) >= 16
    except ValueError:
        return False


def hint(secret: str) -> str:
    return f"{PREFIX}…{secret[-4:]}"


def _fernet(key: str) -> Fernet:
    digest = hashlib.sha256(b"meetingdash.alerts.secrets:" + key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _keys() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(key) for key in keys])


def encrypt(secret: str) -> str:
    return _keys().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _keys().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "the rule's signing secret was encrypted with another DJANGO_SECRET_KEY: "
            "set a new secret on the rule"
        ) from None
