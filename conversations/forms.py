"""Forms."""

from __future__ import annotations

from django.contrib.auth.forms import BaseUserCreationForm


class SignUpForm(BaseUserCreationForm):  # type: ignore[type-arg]
    pass
