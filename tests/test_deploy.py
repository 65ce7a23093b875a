"""Deployment behind HTTPS: `check --deploy`, the HTTPS settings, the Content-Security-Policy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation
from tests.servers import ROOT

# The README's "Deploying behind HTTPS" settings.
PRODUCTION = {
    "SECRET_KEY": "x7Tq-" + "k9Lm2pQr8sVw3yZa6bCd1eFg4hJn5" * 2,
    "DEBUG": "0",
    "ALLOWED_HOSTS": "chat.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_COOKIES": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
    )


def test_check_deploy_is_clean_with_the_production_settings() -> None:
    result = check_deploy(PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_names_what_is_missing_without_them() -> None:
    result = check_deploy({"SECRET_KEY": PRODUCTION["SECRET_KEY"], "DEBUG": "0"})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


@pytest.mark.django_db
def test_https_settings_come_from_the_environment(settings: Any) -> None:
    # What the production set turns on, as Django applies it to a request from the proxy.
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True

    plain = Client().get(reverse("login"))
    proxied = Client().get(reverse("login"), headers={"x-forwarded-proto": "https"})

    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    assert proxied.status_code == 200
    assert proxied["Strict-Transport-Security"] == "max-age=31536000"
    assert "secure" in proxied.cookies["csrftoken"].output().lower()


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy_they_satisfy(user: User) -> None:
    conversation = Conversation.objects.create(owner=user)
    client = Client()
    client.force_login(user)
    for url in (
        reverse("conversation-detail", args=[conversation.pk]),
        reverse("conversation-list"),
    ):
        response = client.get(url)
        policy = response["Content-Security-Policy"]
        nonce = re.search(r"'nonce-([^']+)'", policy)
        assert nonce, policy
        assert "script-src 'self' 'nonce-" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        page = response.content.decode()
        # Every inline script carries the nonce; no inline handlers or styles.
        for script in re.findall(r"<script\b[^>]*>", page):
            assert "src=" in script or f'nonce="{nonce.group(1)}"' in script, script
        assert not re.search(r"\son[a-z]+=", page)
        assert "<style" not in page and " style=" not in page
        assert '"includeIndicatorStyles": false' in page
