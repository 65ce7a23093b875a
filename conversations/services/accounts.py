"""Accounts: who may sign up, and creating users."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction


class SignupClosed(Exception):
    """Sign-up is not open (the SIGNUP setting); the message says who creates accounts."""


def signup_open() -> bool:
    """Whether the sign-up page offers its form (the decision itself is user_create's)."""
    if settings.SIGNUP == "open":
        return True
    return settings.SIGNUP == "first-user-only" and not User.objects.exists()


def user_create(*, username: str, password: str) -> User:
    """Create an account; the first account on the site becomes a superuser.

    Exactly one account is first, however many sign up at once: on PostgreSQL the user table is
    locked against other inserts until the decision commits; on SQLite the insert itself takes
    the database's write lock, so the second sign-up's check sees the first. With SIGNUP
    "first-user-only" every later sign-up raises SignupClosed; "closed" refuses them all.
    """
    if settings.SIGNUP == "closed":
        raise SignupClosed(CLOSED_MESSAGE)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                table = connection.ops.quote_name(User._meta.db_table)
                cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        user = User.objects.create_user(username=username, password=password)
        if User.objects.exclude(pk=user.pk).exists():
            if settings.SIGNUP == "first-user-only":
                raise SignupClosed(CLOSED_MESSAGE)
            return user
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
        return user


CLOSED_MESSAGE = "Sign-up is closed: the site's admin creates accounts."
