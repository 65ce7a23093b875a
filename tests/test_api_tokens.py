"""API tokens: creation, use, revocation; the settings page, the admin, the command, socket auth."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import path, reverse

from conversations.api.auth import SOCKET_MISSING
from conversations.api.tokens import (
    REFUSED,
    TokenRefused,
    token_authenticate,
    token_create,
    token_revoke,
)
from conversations.models import ApiToken
from conversations.routing import websocket_application

TOKEN = re.compile(r"chat_[A-Za-z0-9_-]{43}")


def signed_in(user: User, **options: Any) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


def every_stored_value() -> str:
    """Every column of every token row, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        return repr(cursor.fetchall())


# The service


@pytest.mark.django_db
def test_a_token_is_stored_only_as_its_digest(user: User) -> None:
    token, raw = token_create(user=user, name="backup script")

    assert TOKEN.fullmatch(raw)
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert stored.prefix == raw[:12]
    assert stored.name == "backup script"
    assert raw not in every_stored_value()
    assert raw[12:] not in every_stored_value()


@pytest.mark.django_db
def test_a_token_authenticates_its_user_and_records_its_use(user: User) -> None:
    token, raw = token_create(user=user)
    assert ApiToken.objects.get(pk=token.pk).last_used_at is None

    assert token_authenticate(raw=raw) == user
    first_use = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first_use is not None

    # Within a minute the time is not written again; later it is.
    token_authenticate(raw=raw)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first_use
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=2))
    token_authenticate(raw=raw)
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first_use  # type: ignore[operator]


@pytest.mark.django_db
def test_wrong_and_revoked_tokens_are_refused_alike(user: User) -> None:
    token, raw = token_create(user=user)
    token_revoke(token=token)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None

    refusals = []
    for presented in (raw, "chat_" + "x" * 43, raw[:-1]):
        with pytest.raises(TokenRefused) as refused:
            token_authenticate(raw=presented)
        refusals.append(str(refused.value))
    assert refusals == [REFUSED] * 3
    with pytest.raises(TokenRefused, match="Send an API token"):
        token_authenticate(raw="")


@pytest.mark.django_db
def test_an_inactive_users_tokens_are_refused(user: User) -> None:
    _, raw = token_create(user=user)
    user.is_active = False
    user.save()

    with pytest.raises(TokenRefused, match=re.escape(REFUSED)):
        token_authenticate(raw=raw)


@pytest.mark.django_db
def test_revoking_twice_keeps_the_first_time(user: User) -> None:
    token, _ = token_create(user=user)
    token_revoke(token=token)
    first = ApiToken.objects.get(pk=token.pk).revoked_at
    token_revoke(token=ApiToken.objects.get(pk=token.pk))
    assert ApiToken.objects.get(pk=token.pk).revoked_at == first


# The settings page


@pytest.mark.django_db
def test_the_page_shows_a_new_token_once(user: User) -> None:
    client = signed_in(user)

    created = client.post(reverse("token-list"), {"name": "my <script>"})
    assert created.status_code == 200
    shown = TOKEN.findall(created.content.decode())
    assert len(shown) == 1
    raw = shown[0]
    assert token_authenticate(raw=raw) == user
    assert b"my &lt;script&gt;" in created.content
    assert b"<script>" not in created.content
    assert "no-store" in created["Cache-Control"]
    assert raw not in client.cookies.output()

    listed = client.get(reverse("token-list"))
    page = listed.content.decode()
    assert raw not in page
    assert raw[:12] + "…" in page
    assert "my &lt;script&gt;" in page
    assert "active" in page


@pytest.mark.django_db
def test_the_page_lists_only_the_users_own_tokens(user: User, other_user: User) -> None:
    token_create(user=user, name="mine")
    token_create(user=other_user, name="theirs")

    page = signed_in(user).get(reverse("token-list")).content.decode()
    assert "mine" in page
    assert "theirs" not in page


@pytest.mark.django_db
def test_the_page_revokes_a_token(user: User) -> None:
    token, raw = token_create(user=user, name="old")
    client = signed_in(user)

    response = client.post(reverse("token-revoke", args=[token.pk]), follow=True)
    assert response.status_code == 200
    assert f"Revoked the token {token.prefix}…" in response.content.decode()
    assert "revoked" in response.content.decode()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    with pytest.raises(TokenRefused):
        token_authenticate(raw=raw)


@pytest.mark.django_db
def test_another_users_token_cannot_be_revoked(user: User, other_user: User) -> None:
    token, raw = token_create(user=other_user)

    response = signed_in(user).post(reverse("token-revoke", args=[token.pk]))
    assert response.status_code == 404
    missing = signed_in(user).post(reverse("token-revoke", args=[token.pk + 100]))
    assert missing.status_code == 404
    assert token_authenticate(raw=raw) == other_user


@pytest.mark.django_db
def test_the_page_needs_a_login_and_csrf(user: User) -> None:
    token, _ = token_create(user=user)
    anonymous = Client()
    assert anonymous.get(reverse("token-list")).status_code == 302
    assert anonymous.post(reverse("token-list"), {"name": "x"}).status_code == 302

    strict = signed_in(user, enforce_csrf_checks=True)
    assert strict.post(reverse("token-list"), {"name": "forged"}).status_code == 403
    assert strict.post(reverse("token-revoke", args=[token.pk])).status_code == 403
    assert list(ApiToken.objects.values_list("name", flat=True)) == [""]
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None

    # With the page's own CSRF token, it works.
    page = strict.get(reverse("token-list")).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf is not None
    response = strict.post(
        reverse("token-list"), {"name": "real", "csrfmiddlewaretoken": csrf.group(1)}
    )
    assert response.status_code == 200
    assert ApiToken.objects.filter(name="real").exists()


@pytest.mark.django_db
def test_the_user_menu_links_the_page(user: User) -> None:
    page = signed_in(user).get(reverse("conversation-list")).content.decode()
    assert f'href="{reverse("token-list")}"' in page


# The admin


@pytest.mark.django_db
def test_staff_create_a_token_in_the_admin_and_see_it_once(
    admin_client: Client, user: User
) -> None:
    response = admin_client.post(
        reverse("admin:conversations_apitoken_add"),
        {"user": user.pk, "name": "deploy"},
        follow=True,
    )
    assert response.status_code == 200
    shown = TOKEN.findall(response.content.decode())
    assert len(shown) == 1
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.prefix) == (user, "deploy", shown[0][:12])
    assert token_authenticate(raw=shown[0]) == user
    assert shown[0] not in every_stored_value()

    again = admin_client.get(reverse("admin:conversations_apitoken_changelist"))
    assert shown[0] not in again.content.decode()
    assert token.prefix in again.content.decode()
    change = admin_client.get(reverse("admin:conversations_apitoken_change", args=[token.pk]))
    assert change.status_code == 200
    assert shown[0] not in change.content.decode()


@pytest.mark.django_db
def test_staff_revoke_tokens_in_the_admin(admin_client: Client, user: User) -> None:
    tokens = [token_create(user=user, name=f"t{i}")[0] for i in range(3)]

    response = admin_client.post(
        reverse("admin:conversations_apitoken_changelist"),
        {"action": "revoke_selected", "_selected_action": [tokens[0].pk, tokens[1].pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 2 token(s)." in response.content.decode()
    revoked = dict(ApiToken.objects.values_list("name", "revoked_at"))
    assert revoked["t0"] is not None and revoked["t1"] is not None
    assert revoked["t2"] is None

    searched = admin_client.get(reverse("admin:conversations_apitoken_changelist"), {"q": "t2"})
    assert searched.status_code == 200
    filtered = admin_client.get(
        reverse("admin:conversations_apitoken_changelist"), {"revoked_at__isempty": "1"}
    )
    assert filtered.status_code == 200


# The command


@pytest.mark.django_db
def test_the_command_creates_lists_and_revokes(user: User) -> None:
    out = io.StringIO()
    call_command("api_token", "create", "alice", "--name", "cron", stdout=out)
    raw = out.getvalue().strip()
    assert TOKEN.fullmatch(raw)
    assert token_authenticate(raw=raw) == user
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["cron"]

    listing = io.StringIO()
    call_command("api_token", "list", "alice", stdout=listing)
    assert raw[:12] in listing.getvalue()
    assert raw not in listing.getvalue()
    assert "active" in listing.getvalue()

    call_command("api_token", "revoke", raw[:12], stderr=io.StringIO())
    with pytest.raises(TokenRefused):
        token_authenticate(raw=raw)

    # The whole token works as well as its prefix.
    _, second = token_create(user=user, name="second")
    call_command("api_token", "revoke", second, stderr=io.StringIO())
    assert ApiToken.objects.get(name="second").revoked_at is not None


@pytest.mark.django_db
def test_the_command_refuses_unknown_users_and_prefixes(user: User) -> None:
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        call_command("api_token", "create", "nobody")
    with pytest.raises(CommandError, match="No API token starts with"):
        call_command("api_token", "revoke", "chat_nothing")
    assert not ApiToken.objects.exists()


# The socket's middleware


class Reporter(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Says who the socket is and why its token was refused."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json(
            {
                "user": user.username if user.is_authenticated else None,
                "error": self.scope.get("api_auth_error"),
                "subprotocols": self.scope.get("subprotocols"),
            }
        )


app = websocket_application(
    page_routes=[path("ws/conversations/<int:conversation_id>/", Reporter.as_asgi())],
    api_routes=[path("ws/api/conversations/<int:conversation_id>/", Reporter.as_asgi())],
)


async def report(
    url: str = "/ws/api/conversations/1/",
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
) -> dict[str, Any] | None:
    """What the socket says of itself, or None when its handshake was refused."""
    socket = WebsocketCommunicator(app, url, headers=headers or [], subprotocols=subprotocols)
    connected, _ = await socket.connect()
    said = await socket.receive_json_from() if connected else None
    await socket.disconnect()
    return said


@pytest.mark.django_db(transaction=True)
async def test_the_socket_takes_a_token_from_the_header_or_a_subprotocol(user: User) -> None:
    _, raw = await sync_to_async(token_create)(user=user)

    by_header = await report(headers=[(b"authorization", f"Bearer {raw}".encode())])
    assert by_header == {"user": "alice", "error": "", "subprotocols": []}
    by_protocol = await report(subprotocols=["chat.v1", f"bearer.{raw}"])
    # The token's subprotocol is not one the consumer can pick (and send back).
    assert by_protocol == {"user": "alice", "error": "", "subprotocols": ["chat.v1"]}


@pytest.mark.django_db(transaction=True)
async def test_the_socket_refuses_missing_wrong_and_revoked_tokens_alike(user: User) -> None:
    token, raw = await sync_to_async(token_create)(user=user)
    wrong = "chat_" + "A" * 43

    assert await report() == {"user": None, "error": SOCKET_MISSING, "subprotocols": []}
    said_wrong = await report(headers=[(b"authorization", f"Bearer {wrong}".encode())])
    await sync_to_async(token_revoke)(token=token)
    said_revoked = await report(headers=[(b"authorization", f"Bearer {raw}".encode())])
    said_revoked_protocol = await report(subprotocols=["chat.v1", f"bearer.{raw}"])

    expected: dict[str, Any] = {"user": None, "error": REFUSED, "subprotocols": []}
    assert said_wrong == said_revoked == expected
    assert said_revoked_protocol == {**expected, "subprotocols": ["chat.v1"]}


@pytest.mark.django_db(transaction=True)
async def test_the_api_socket_needs_no_origin_and_the_page_socket_still_does(
    user: User,
) -> None:
    _, raw = await sync_to_async(token_create)(user=user)
    bearer = (b"authorization", f"Bearer {raw}".encode())
    host = (b"host", b"localhost")

    # A program sends no Origin (or any): the token is what counts.
    assert (await report(headers=[bearer, host]) or {}).get("user") == "alice"
    foreign = (b"origin", b"http://evil.example")
    assert (await report(headers=[bearer, host, foreign]) or {}).get("user") == "alice"

    page = "/ws/conversations/1/"
    assert await report(page, headers=[bearer, host]) is None
    assert await report(page, headers=[bearer, host, foreign]) is None
    # A token does not sign in a page socket: it uses the session only.
    same = (b"origin", b"http://localhost")
    assert await report(page, headers=[bearer, host, same]) == {
        "user": None,
        "error": None,
        "subprotocols": [],
    }
