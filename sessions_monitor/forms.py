"""Forms of the dashboard pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest

from sessions_monitor import limits
from sessions_monitor.upstream import InvalidSessionId, validate_session_id


class WatchForm(forms.Form):
    session_id = forms.CharField(
        label="Session id",
        max_length=200,
        widget=forms.TextInput(
            attrs={
                "placeholder": "mbsess_…",
                "autocomplete": "off",
                "spellcheck": "false",
                "aria-describedby": "watch-error",
            }
        ),
    )

    def clean_session_id(self) -> str:
        value = self.cleaned_data["session_id"].strip()
        try:
            return validate_session_id(value)
        except InvalidSessionId:
            raise forms.ValidationError(
                "That is not a session id. Session ids start with “mbsess_” followed by "
                "letters, digits, “_” or “-” (up to 64).",
                code="malformed",
            ) from None


class ThrottledLoginMixin:
    """Refuses to even try a password while the username or the client address has used
    up its failed logins (limits.login_locked); counts wrong credentials."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]
    user_cache: Any

    THROTTLED = (
        "Too many failed logins for this account or from this address. "
        "Wait a few minutes, then try again."
    )

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        address = client_address(self.request)
        if limits.login_locked(username, address):
            raise forms.ValidationError(self.THROTTLED, code="throttled")
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except forms.ValidationError:
            if self.user_cache is None:  # wrong username or password (not "inactive" etc.)
                limits.login_failed(username, address)
            raise
        limits.login_succeeded(username)
        return cleaned


def client_address(request: HttpRequest | None) -> str:
    """The client's address as daphne reports it (behind a proxy with
    MEETINGDASH_PROXY_HEADERS=1: the forwarded one)."""
    if request is None:
        return "unknown"
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
