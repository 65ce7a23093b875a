"""The conversations' sidebar on the pages, and search over one's own titles and messages."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def conversation_with(
    user: User, title: str, *texts: str, status: str = "complete"
) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title=title)
    for text in texts:
        Message.objects.create(conversation=conversation, role=Message.Role.USER, content=text)
    if texts:
        Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, content="Ok.", status=status
        )
    return conversation


def sidebar_of(page: str) -> str:
    return page[page.index('<nav id="sidebar"') : page.index("</nav>", page.index('id="sidebar"'))]


def test_the_sidebar_lists_ones_conversations_newest_first_with_the_current_one_marked(
    user: User, other_user: User
) -> None:
    older = conversation_with(user, "Older", "hello")
    newer = conversation_with(user, "Newer", "hello again")
    conversation_with(
        user,
        "",
    )  # empty: not listed
    conversation_with(other_user, "Bob's secret", "hi")
    current = Conversation.objects.create(owner=user)  # empty, but it is this page's

    page = signed_in(user).get(reverse("conversation-detail", args=[current.pk])).content.decode()
    sidebar = sidebar_of(page)
    titles = re.findall(r'<span class="sidebar-title">(.*?)</span>', sidebar)
    assert titles == [f"Conversation {current.pk}", "Newer", "Older"]
    assert "Bob" not in sidebar
    assert sidebar.count('aria-current="page"') == 1
    assert re.search(
        rf'<li id="sidebar-conversation-{current.pk}" class="sidebar-entry current">\s*'
        rf'<a href="/conversations/{current.pk}/" aria-current="page">',
        sidebar,
    )
    assert 'aria-controls="sidebar-panel"' in sidebar
    assert "New conversation" in sidebar
    assert f"/conversations/{newer.pk}/" in sidebar and f"/conversations/{older.pk}/" in sidebar


def test_badges_say_running_failed_and_interrupted(user: User) -> None:
    running = conversation_with(user, "Running one", "go", status=Message.Status.STREAMING)
    failed = conversation_with(user, "Failed one", "go", status=Message.Status.FAILED)
    interrupted = conversation_with(user, "Cut one", "go", status=Message.Status.INTERRUPTED)
    fine = conversation_with(user, "Fine one", "go")

    sidebar = sidebar_of(signed_in(user).get(reverse("conversation-list")).content.decode())

    def entry(conversation: Conversation) -> str:
        return re.findall(
            rf'<li id="sidebar-conversation-{conversation.pk}".*?</li>', sidebar, re.S
        )[0]

    assert '<span class="badge running">Running</span>' in entry(running)
    assert '<span class="badge failed">Failed</span>' in entry(failed)
    assert '<span class="badge failed">Interrupted</span>' in entry(interrupted)
    assert "badge" not in entry(fine)
    assert 'aria-current="page"' not in sidebar


def test_the_sidebar_is_capped_with_a_link_to_all(user: User) -> None:
    for number in range(services.SIDEBAR_LIMIT + 1):
        conversation_with(user, f"Chat {number}", "hi")
    sidebar = sidebar_of(signed_in(user).get(reverse("conversation-list")).content.decode())
    assert sidebar.count('class="sidebar-entry') == services.SIDEBAR_LIMIT
    assert f"Chat {services.SIDEBAR_LIMIT}" in sidebar and ">Chat 0<" not in sidebar
    assert "All conversations" in sidebar


def test_search_finds_titles_and_messages_ignoring_case_with_an_escaped_snippet(
    user: User,
) -> None:
    by_message = conversation_with(
        user, "Cooking", "x" * 200 + " How long do I boil <Spaghetti> for? " + "y" * 200
    )
    by_title = conversation_with(user, "Spaghetti westerns", "films")
    conversation_with(user, "Other", "nothing here")

    response = signed_in(user).get(reverse("conversation-search"), {"q": "spaghetti"})
    page = response.content.decode()
    results = page[page.index('<ul class="search-results">') :]
    assert f'href="/conversations/{by_message.pk}/"' in results
    assert f'href="/conversations/{by_title.pk}/"' in results
    assert "Other" not in results
    assert "boil &lt;<mark>Spaghetti</mark>&gt; for?" in results
    # A short snippet around the match, not the whole message.
    assert "x" * 100 not in results
    assert "…" in results
    assert "<mark>Spaghetti</mark> westerns" in results


def test_search_never_shows_another_users_conversations(user: User, other_user: User) -> None:
    conversation_with(other_user, "Bob's plans", "the secret word is walrus")
    conversation_with(user, "Mine", "a walrus poem")
    page = signed_in(user).get(reverse("conversation-search"), {"q": "walrus"}).content.decode()
    assert "a <mark>walrus</mark> poem" in page
    assert "secret" not in page and "Bob" not in page
    assert services.conversation_search(user=user, query="secret") == []


def test_an_empty_query_shows_a_hint_and_no_results(user: User) -> None:
    conversation_with(user, "Anything", "at all")
    page = signed_in(user).get(reverse("conversation-search"), {"q": "   "}).content.decode()
    assert "search-hint" in page
    assert '<ul class="search-results">' not in page


def test_search_results_are_limited_and_htmx_gets_the_results_only(user: User) -> None:
    for number in range(services.SEARCH_LIMIT + 5):
        conversation_with(user, f"Tea {number}", "tea time")
    response = signed_in(user).get(
        reverse("conversation-search"), {"q": "TEA"}, headers={"HX-Request": "true"}
    )
    page = response.content.decode()
    assert page.count("<li>") == services.SEARCH_LIMIT
    assert "<html" not in page and 'id="sidebar"' not in page


def test_search_needs_a_login(client: Client) -> None:
    response = client.get(reverse("conversation-search"), {"q": "x"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# A delete stops the conversation's answers first, through channels' database_sync_to_async,
# which closes a connection left in a transaction, as a test's is: this test commits.
@pytest.mark.django_db(transaction=True)
def test_delete_from_the_toolbar_lands_on_the_list(user: User) -> None:
    conversation = conversation_with(user, "Doomed", "bye")
    client = signed_in(user)
    page = client.get(reverse("conversation-detail", args=[conversation.pk])).content.decode()
    assert 'data-confirm="Delete this conversation?"' in page
    response = client.post(reverse("conversation-delete", args=[conversation.pk]))
    assert response["Location"] == reverse("conversation-list")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
