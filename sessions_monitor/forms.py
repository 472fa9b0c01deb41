"""Forms of the dashboard pages."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest

from sessions_monitor import control, limits
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


TRANSCRIPTION_LANGUAGES = (
    ("en", "English"),
    ("de", "German"),
    ("fr", "French"),
    ("es", "Spanish"),
    ("it", "Italian"),
    ("nl", "Dutch"),
    ("pt", "Portuguese"),
    ("ja", "Japanese"),
)
DEFAULT_BOT_NAME = "Meeting Buddy"


class SendBotForm(forms.Form):
    """What Meeting Buddy needs to send a bot into a meeting (its `POST /sessions` body)."""

    meeting_link = forms.CharField(
        label="Meeting link",
        max_length=2000,
        widget=forms.TextInput(
            attrs={
                "placeholder": "https://zoom.us/j/…",
                "autocomplete": "off",
                "spellcheck": "false",
                "inputmode": "url",
                "aria-describedby": "meeting-link-help meeting-link-error",
            }
        ),
    )
    bot_name = forms.CharField(
        label="Bot name",
        max_length=100,
        required=False,
        initial=DEFAULT_BOT_NAME,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "aria-describedby": "bot-name-help bot-name-error"}
        ),
    )
    transcription_enabled = forms.BooleanField(
        label="Transcribe the meeting", required=False, initial=True
    )
    transcription_language = forms.ChoiceField(
        label="Language", choices=TRANSCRIPTION_LANGUAGES, initial="en"
    )

    def clean_meeting_link(self) -> str:
        value = str(self.cleaned_data["meeting_link"]).strip()
        problem = control.validate_meeting_link(value)
        if problem:
            raise forms.ValidationError(problem, code="meeting_link")
        return value

    def clean_bot_name(self) -> str:
        return str(self.cleaned_data["bot_name"]).strip() or DEFAULT_BOT_NAME


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
