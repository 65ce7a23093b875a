"""Accounts: who may sign up, the first admin, failed-login lockouts, and forms fed bad text."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.models import Conversation

pytestmark = pytest.mark.django_db

PASSWORD = "pass-word-123!"


def sign_up(name: str) -> Any:
    return Client().post(
        reverse("signup"), {"username": name, "password1": PASSWORD, "password2": PASSWORD}
    )


def test_first_user_only_lets_the_first_account_in_and_then_says_who_adds_accounts(
    settings: Any,
) -> None:
    settings.SIGNUP = "first-user-only"
    assert sign_up("first").status_code == 302

    page = Client().get(reverse("signup"))
    refused = sign_up("second")

    assert b"the site&#x27;s admin creates accounts" in page.content
    assert b"<form" not in page.content.split(b"<main>")[1]
    assert refused.status_code == 403
    assert list(User.objects.values_list("username", "is_superuser")) == [("first", True)]


def test_closed_sign_up_creates_no_account(settings: Any) -> None:
    settings.SIGNUP = "closed"

    page = Client().get(reverse("signup"))
    refused = sign_up("anyone")

    assert b"admin creates accounts" in page.content
    assert refused.status_code == 403
    assert not User.objects.exists()


def test_open_sign_up_makes_only_the_first_account_an_admin(settings: Any) -> None:
    settings.SIGNUP = "open"
    for name in ("first", "second", "third"):
        assert sign_up(name).status_code == 302
    assert list(User.objects.order_by("pk").values_list("is_superuser", "is_staff")) == [
        (True, True),
        (False, False),
        (False, False),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="concurrent sign-ups need a server database (SQLite's in-memory test database "
    "cannot be written by threads at once)",
)
@pytest.mark.parametrize("signup", ["open", "first-user-only"])
def test_twenty_first_sign_ups_at_once_make_exactly_one_admin(settings: Any, signup: str) -> None:
    settings.SIGNUP = signup
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def sign_up_at_once(number: int) -> None:
        start.wait()
        try:
            services.user_create(username=f"user{number}", password=PASSWORD)
            outcomes.append("created")
        except services.SignupClosed:
            outcomes.append("closed")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sign_up_at_once, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert User.objects.filter(is_superuser=True).count() == 1
    if signup == "open":
        assert outcomes.count("created") == 20
        assert User.objects.count() == 20
    else:
        assert (outcomes.count("created"), outcomes.count("closed")) == (1, 19)
        assert User.objects.count() == 1


@pytest.mark.parametrize("login_url", ["login", "admin:login"])
def test_too_many_failed_logins_for_an_account_lock_it_and_say_when_to_retry(
    user: User, settings: Any, login_url: str
) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    url = reverse(login_url)
    statuses = [
        Client(REMOTE_ADDR=f"10.0.0.{attempt}")
        .post(url, {"username": "alice", "password": "wrong"})
        .status_code
        for attempt in range(3)
    ]
    # The third failure is answered with the lockout.
    assert statuses == [200, 200, 429]

    # Even the right password, from yet another address.
    locked = Client(REMOTE_ADDR="10.0.0.99").post(
        url, {"username": "alice", "password": "a-long-password-1"}
    )

    assert locked.status_code == 429
    assert b"Try again in 15 minutes" in locked.content
    assert locked["Retry-After"] == "900"
    assert "_auth_user_id" not in Client().session


def test_too_many_failed_logins_from_one_address_lock_it(user: User, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    client = Client(REMOTE_ADDR="10.1.1.1")
    for name in ("x", "y", "z"):
        client.post(reverse("login"), {"username": name, "password": "wrong"})

    locked = client.post(reverse("login"), {"username": "alice", "password": "a-long-password-1"})
    elsewhere = Client(REMOTE_ADDR="10.1.1.2").post(
        reverse("login"), {"username": "alice", "password": "a-long-password-1"}
    )

    assert locked.status_code == 429
    assert elsewhere.status_code == 302


def test_a_successful_login_resets_the_count(user: User, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(2):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert (
        client.post(
            reverse("login"), {"username": "alice", "password": "a-long-password-1"}
        ).status_code
        == 302
    )
    client.logout()
    for _ in range(2):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert (
        client.post(
            reverse("login"), {"username": "alice", "password": "a-long-password-1"}
        ).status_code
        == 302
    )


# Raw bodies: Django's test client cannot encode a lone surrogate, and a browser would send
# its UTF-8-like bytes (ED A0 80) percent-encoded.
BAD_VALUES = ["bad%ED%A0%80", "nul%00inside", "%ED%B3%BF", "%FF%FE"]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_sign_up_with_bad_text_is_a_form_error(value: str, settings: Any) -> None:
    settings.SIGNUP = "open"
    response = Client().post(
        reverse("signup"),
        f"username={value}&password1={value}x9q&password2={value}x9q",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert b"errorlist" in response.content
    for user in User.objects.all():
        assert "\x00" not in user.username
        user.username.encode("utf-8")


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("login_url", ["login", "admin:login"])
def test_login_with_bad_text_is_a_form_error(user: User, value: str, login_url: str) -> None:
    response = Client().post(
        reverse(login_url),
        f"username={value}&password={value}",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert b"errorlist" in response.content or b"errornote" in response.content


@pytest.mark.parametrize("value", BAD_VALUES)
def test_choosing_a_model_with_bad_text_is_refused(user: User, value: str) -> None:
    conversation = Conversation.objects.create(owner=user, model="m", api_style="responses")
    client = Client()
    client.force_login(user)
    response = client.post(
        reverse("conversation-configure", args=[conversation.pk]),
        f"model={value}&api_style={value}",
        content_type="application/x-www-form-urlencoded",
        follow=True,
    )
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert (conversation.model, conversation.api_style) == ("m", "responses")
