"""`manage.py api_token create|revoke|list`: API tokens from a shell, for scripts."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.api import tokens
from conversations.models import ApiToken


class Command(BaseCommand):
    help = "Create, revoke or list API tokens (docs/api.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create: ArgumentParser = actions.add_parser(
            "create", help="create a token for USERNAME and print just the token"
        )
        create.add_argument("username")
        create.add_argument("--name", default="", help="what the token is for")
        revoke: ArgumentParser = actions.add_parser(
            "revoke", help="revoke the token that starts with PREFIX (as listed, e.g. chat_AbC1234)"
        )
        revoke.add_argument("prefix")
        listing: ArgumentParser = actions.add_parser("list", help="list USERNAME's tokens")
        listing.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            _, raw = tokens.token_create(user=self.user(options["username"]), name=options["name"])
            self.stdout.write(raw)
        elif action == "revoke":
            token = self.token(options["prefix"])
            tokens.token_revoke(token=token)
            self.stderr.write(
                f"Revoked {token.prefix}… ({token.name or 'unnamed'}) of {token.user}."
            )
        else:
            for token in tokens.token_list(user=self.user(options["username"])):
                used = token.last_used_at.isoformat() if token.last_used_at else "never used"
                state = f"revoked {token.revoked_at.isoformat()}" if token.revoked_at else "active"
                self.stdout.write(
                    f"{token.prefix}…\t{token.name or '(unnamed)'}\t"
                    f"created {token.created_at.isoformat()}\t{used}\t{state}"
                )

    def user(self, username: str) -> User:
        try:
            return User.objects.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(f"There is no user {username!r}.") from None

    def token(self, prefix: str) -> ApiToken:
        found = tokens.token_find(prefix=prefix)
        if not found:
            raise CommandError(f"No API token starts with {prefix!r}.")
        if len(found) > 1:
            raise CommandError(
                f"{len(found)} API tokens start with {prefix!r}; revoke the one you mean in the "
                "admin or on its owner's API tokens page."
            )
        return found[0]
