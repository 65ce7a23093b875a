"""Forms."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import BaseUserCreationForm


class SignUpForm(BaseUserCreationForm):  # type: ignore[type-arg]
    pass


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        required=False,
        help_text="What the token is for, e.g. “backup script”.",
    )
