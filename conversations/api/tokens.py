"""API tokens: create, revoke, and turn a presented token into its user."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from ..models import ApiToken

TOKEN_PREFIX = "chat_"
# What a token's list shows of it: "chat_" and 7 of its random characters.
SHOWN_LENGTH = 12
# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

MISSING = "Send an API token: Authorization: Bearer <token>."
REFUSED = "That API token is not valid: it is wrong or was revoked."


class TokenRefused(Exception):
    """The presented token does not authenticate anyone; the message says why, as sent."""


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def token_create(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`: its row, and the token itself, which is not stored anywhere."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip(), prefix=raw[:SHOWN_LENGTH], digest=token_digest(raw)
    )
    return token, raw


def token_revoke(*, token: ApiToken) -> None:
    """Refuse the token from now on (revoking a revoked token keeps its first revocation)."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=token.revoked_at)


def token_list(*, user: User) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user).order_by("-created_at", "-id"))


def token_get(*, user: User, token_id: int) -> ApiToken:
    """The user's token; anyone else's raises DoesNotExist, like a missing one."""
    return ApiToken.objects.get(pk=token_id, user=user)


def token_authenticate(*, raw: str) -> User:
    """The active user whose unrevoked token `raw` is; TokenRefused otherwise.

    A wrong token and a revoked one are refused with the same message. The lookup is by the
    token's SHA-256: a token has 256 random bits, so timing the lookup tells nothing useful.
    """
    if not raw:
        raise TokenRefused(MISSING)
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(raw), revoked_at=None, user__is_active=True)
        .first()
    )
    if token is None:
        raise TokenRefused(REFUSED)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def token_find(*, prefix: str) -> list[ApiToken]:
    """The tokens shown as `prefix` (as listed: "chat_AbC1234"); a whole token finds itself."""
    prefix = prefix.removesuffix("…").strip()
    if len(prefix) > SHOWN_LENGTH:
        return list(ApiToken.objects.filter(digest=token_digest(prefix)).select_related("user"))
    return list(ApiToken.objects.filter(prefix=prefix).select_related("user"))
