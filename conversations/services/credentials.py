"""Users' own values for MCP servers' `user_headers`: stored encrypted (Fernet, CREDENTIALS_KEY),
read back only to send them to that server."""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.contrib.auth.models import User

from ..models import UserCredential
from ..refusals import InvalidInput
from .database import database_async

CREDENTIAL_MAX_LENGTH = 4000


@functools.lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        # Derived from SECRET_KEY: changing it makes the stored values unreadable (users enter
        # them again); CREDENTIALS_KEY keeps them across a SECRET_KEY change.
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"djchat credentials"
        ).derive(secret_key.encode())
        keys = (base64.urlsafe_b64encode(derived).decode(),)
    return MultiFernet([Fernet(key) for key in keys])


def cipher() -> MultiFernet:
    """Encrypts with the first of CREDENTIALS_KEY's keys, decrypts with any of them."""
    return _cipher(tuple(settings.CREDENTIALS_KEY), settings.SECRET_KEY)


def credential_set(*, user: User, server: str, name: str, value: str) -> UserCredential:
    """Store (or replace) one of the user's values, encrypted."""
    value = value.strip()
    if not value:
        raise InvalidInput("Enter a value, or remove it.")
    if len(value) > CREDENTIAL_MAX_LENGTH:
        raise InvalidInput(f"A value is at most {CREDENTIAL_MAX_LENGTH:,} characters.")
    if any(character in value for character in "\r\n\0"):
        raise InvalidInput("A value is one line, as a header sends it.")
    credential, _ = UserCredential.objects.update_or_create(
        user=user,
        server=server,
        name=name,
        defaults={"encrypted": cipher().encrypt(value.encode())},
    )
    return credential


def credential_delete(*, user: User, server: str, name: str) -> None:
    UserCredential.objects.filter(user=user, server=server, name=name).delete()


def credentials_of(*, user_id: int) -> dict[str, dict[str, str]]:
    """The user's values, decrypted, by server and name; one that no key opens is left out
    (the user enters it again)."""
    found: dict[str, dict[str, str]] = {}
    for credential in UserCredential.objects.filter(user_id=user_id):
        try:
            value = cipher().decrypt(bytes(credential.encrypted)).decode()
        except InvalidToken:
            continue
        found.setdefault(credential.server, {})[credential.name] = value
    return found


acredentials_of = database_async(credentials_of)


def credentials_saved(*, user: User) -> dict[tuple[str, str], UserCredential]:
    """The user's stored values by (server, name), for their settings page (not decrypted)."""
    return {
        (credential.server, credential.name): credential
        for credential in UserCredential.objects.filter(user=user).defer("encrypted")
    }
