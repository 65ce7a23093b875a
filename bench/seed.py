"""The benchmark's data, in whichever database DATABASE_URL names.

    seed.py pages --count C --url ws://127.0.0.1:8100 [--watch ws://127.0.0.1:8101] > pages.json
    seed.py check --conversations 1,2,3 --tokens 100

`pages` makes C users, each signed in with one new conversation, and prints the pages the load
client opens. `check` reads the answers back and counts their tokens: every one exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from pathlib import Path

import django
from upstream import TOKEN_PATTERN

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")


def pages(count: int, url: str, watch: str | None) -> list[dict[str, object]]:
    from django.contrib.auth.models import User
    from django.test import Client

    from conversations.models import Conversation

    streams: list[dict[str, object]] = []
    batch = uuid.uuid4().hex[:8]
    for number in range(count):
        # No password: hashing hundreds of them would take minutes and measures nothing.
        user = User.objects.create(username=f"bench-{batch}-{number}")
        conversation = Conversation.objects.create(owner=user, model="bench-model")
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        path = f"/ws/conversations/{conversation.pk}/"
        streams.append(
            {
                "conversation": conversation.pk,
                "writer": {"url": url + path, "cookie": cookie},
                "watcher": {"url": watch + path, "cookie": cookie} if watch else None,
            }
        )
    return streams


def check(conversation_ids: list[int], tokens: int) -> dict[str, int]:
    """Tokens lost and repeated in the stored answers, and answers not finished."""
    from conversations.models import Message

    answers = Message.objects.filter(conversation__in=conversation_ids, role="assistant")
    lost = repeated = stuck = failed = 0
    for answer in answers:
        indexes = [int(index) for index, _ in re.findall(TOKEN_PATTERN, answer.content)]
        lost += len(set(range(tokens)) - set(indexes))
        repeated += len(indexes) - len(set(indexes))
        stuck += answer.in_progress
        failed += answer.status not in ("complete", "queued", "streaming")
    missing = len(conversation_ids) - answers.count()
    return {
        "rows_tokens_lost": lost + missing * tokens,
        "rows_tokens_duplicated": repeated,
        "answers_stuck": stuck,
        "answers_failed_in_rows": failed + missing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("pages")
    make.add_argument("--count", type=int, required=True)
    make.add_argument("--url", required=True)
    make.add_argument("--watch")
    read = commands.add_parser("check")
    read.add_argument("--conversations", required=True)
    read.add_argument("--tokens", type=int, default=100)
    options = parser.parse_args()
    django.setup()
    if options.command == "pages":
        print(json.dumps(pages(options.count, options.url, options.watch)))
    else:
        ids = [int(value) for value in options.conversations.split(",") if value]
        print(json.dumps(check(ids, options.tokens)))


if __name__ == "__main__":
    main()
