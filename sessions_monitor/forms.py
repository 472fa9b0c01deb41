"""Forms of the dashboard pages."""

from __future__ import annotations

from django import forms

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
