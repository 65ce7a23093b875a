"""Accounts: who may sign up, the first admin, and lockouts after failed logins."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from conversations import services

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
