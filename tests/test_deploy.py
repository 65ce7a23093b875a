"""Behind HTTPS: `check --deploy` with docs/deploy.md's settings; the Content-Security-Policy."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations.models import Conversation
from tests.helpers.servers import ROOT

# docs/deploy.md's "Behind HTTPS" settings.
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


def run(*command: str) -> subprocess.CompletedProcess[str]:
    """`manage.py <command>` with the production settings in the environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env={**base, **PRODUCTION},
        capture_output=True,
        text=True,
    )


def test_check_deploy_is_clean_with_the_production_settings() -> None:
    result = run("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
    # The one setting `check --deploy` does not look at.
    proxy_header = run(
        "shell", "-c", "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    )
    assert proxy_header.stdout.splitlines()[-1] == "('HTTP_X_FORWARDED_PROTO', 'https')"


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
