"""Pages: sign-up, the conversation list, search, the chat page and the API tokens page."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from . import actions, llm, mcp_servers, services
from .api import export, tokens
from .forms import ApiTokenForm, SignUpForm
from .models import ApiToken, Conversation, ToolCall
from .refusals import InvalidInput


class SignedInRequest(HttpRequest):
    user: User
    htmx: HtmxDetails


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("conversation-list")
    if not services.signup_open():
        return signup_closed(request)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_create(
                username=form.cleaned_data["username"], password=form.cleaned_data["password1"]
            )
        except services.SignupClosed:
            # Someone else became the first account a moment ago.
            return signup_closed(request)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("conversation-list")
    return render(request, "registration/signup.html", {"form": form})


def signup_closed(request: HttpRequest) -> HttpResponse:
    status = 403 if request.method == "POST" else 200
    return render(
        request,
        "registration/signup.html",
        {"closed": services.CLOSED_MESSAGE},
        status=status,
    )


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """django-axes' answer to a login for an account or address with too many failures."""
    cooloff = settings.AXES_COOLOFF_TIME
    minutes = math.ceil(cooloff.total_seconds() / 60)
    response = render(
        request,
        "registration/locked_out.html",
        {"minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT},
        status=429,
    )
    response["Retry-After"] = str(int(cooloff.total_seconds()))
    return response


def client_ip(request: HttpRequest) -> str:
    """The address failed logins are counted against (CLIENT_IP_HEADER behind a proxy)."""
    forwarded = request.META.get(settings.CLIENT_IP_HEADER, "") if settings.CLIENT_IP_HEADER else ""
    # A proxy that appends to X-Forwarded-For puts the address it saw last.
    return str(forwarded.split(",")[-1].strip() or request.META.get("REMOTE_ADDR", ""))


def sidebar_context(
    request: SignedInRequest, current: Conversation | None = None
) -> dict[str, Any]:
    """What the sidebar of the user's conversations shows (conversations/sidebar.html)."""
    conversations, more = services.sidebar_conversations(user=request.user, current=current)
    return {
        "sidebar_conversations": conversations,
        "sidebar_more": more,
        "current_id": current.pk if current is not None else None,
    }


@require_GET
@login_required
def conversation_list(request: SignedInRequest) -> HttpResponse:
    return render(
        request,
        "conversations/list.html",
        {
            "conversations": services.conversation_list(user=request.user, with_empty=False),
            "model": llm.model_name(),
            "setup_hint": llm.SETUP_HINT,
            **sidebar_context(request),
        },
    )


@require_GET
@login_required
def conversation_search(request: SignedInRequest) -> HttpResponse:
    """The user's conversations whose title or messages contain `q`; htmx asks for the results
    only (the sidebar's live results)."""
    query = " ".join(request.GET.get("q", "").split())[: services.SEARCH_QUERY_MAX_LENGTH]
    context = {
        "query": query,
        "results": services.conversation_search(user=request.user, query=query),
    }
    if request.htmx:
        return render(request, "conversations/search.html#search-results", context)
    return render(request, "conversations/search.html", context | sidebar_context(request))


@require_POST
@login_required
def conversation_create(request: SignedInRequest) -> HttpResponse:
    conversation = services.conversation_create(owner=request.user, reuse_empty=True)
    return redirect("conversation-detail", conversation_id=conversation.pk)


@require_GET
@login_required
def conversation_detail(request: SignedInRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation(request, conversation_id)
    messages = services.message_list(conversation=conversation)
    return render(
        request,
        "conversations/detail.html",
        {
            "conversation": conversation,
            "history": messages,
            "running": any(message.in_progress for message in messages),
            "usage": services.usage_total(messages),
            "model": llm.model_name(),
            "model_choices": llm.model_choices(),
            "api_styles": llm.api_style_choices(),
            "setup_hint": llm.SETUP_HINT,
            **sidebar_context(request, conversation),
        },
    )


@require_GET
@login_required
def conversation_export_markdown(request: SignedInRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation(request, conversation_id)
    return export.export_response(conversation=conversation, kind="markdown")


@require_GET
@login_required
def conversation_export_json(request: SignedInRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation(request, conversation_id)
    return export.export_response(conversation=conversation, kind="json")


@require_POST
@login_required
def conversation_configure(request: SignedInRequest, conversation_id: int) -> HttpResponse:
    conversation = get_conversation(request, conversation_id)
    try:
        services.conversation_configure(
            conversation=conversation,
            model=request.POST.get("model", ""),
            api_style=request.POST.get("api_style", ""),
        )
    except InvalidInput as error:
        flash.error(request, str(error))
    return redirect("conversation-detail", conversation_id=conversation.pk)


@require_POST
@login_required
def conversation_delete(request: SignedInRequest, conversation_id: int) -> HttpResponse:
    async_to_sync(actions.conversation_delete)(
        conversation=get_conversation(request, conversation_id)
    )
    return redirect("conversation-list")


def get_conversation(request: SignedInRequest, conversation_id: int) -> Conversation:
    try:
        return services.conversation_get(user=request.user, conversation_id=conversation_id)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.") from None


# How long the image of a call that has just finished may take to reach its row.
IMAGE_WAIT = 3.0


@require_GET
@login_required
async def tool_call_image(
    request: HttpRequest, message_id: int, step: int, index: int, number: int
) -> HttpResponse:
    """An image of a tool call's result, served from its row (never a remote address), to the
    conversation's owner only."""
    user = await request.auser()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IMAGE_WAIT
    while True:
        try:
            image = await services.atool_call_image(
                user=user, message_id=message_id, step=step, index=index, number=number
            )
        except ToolCall.DoesNotExist:
            raise Http404("No such image.") from None
        if image is not None:
            break
        if loop.time() > deadline:
            raise Http404("No such image (yet).")
        await asyncio.sleep(0.1)
    response = HttpResponse(image.data, content_type=image.mime_type)
    response["Cache-Control"] = "private, max-age=86400"
    response["Content-Security-Policy"] = "default-src 'none'"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_http_methods(["GET", "POST"])
@login_required
@never_cache
def token_list(request: SignedInRequest) -> HttpResponse:
    """The user's API tokens; a POST creates one, shown on this answer only (never stored)."""
    form = ApiTokenForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            created = tokens.token_create(user=request.user, name=form.cleaned_data["name"])
            form = ApiTokenForm()
        else:
            status = 400
    return render(
        request,
        "settings/tokens.html",
        {
            "form": form,
            "tokens": tokens.token_list(user=request.user),
            "created": created[0] if created else None,
            "created_raw": created[1] if created else "",
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@login_required
@never_cache
def credential_list(request: SignedInRequest) -> HttpResponse:
    """The values the MCP servers' `user_headers` ask of the user: which are set (never what
    they are); a POST saves or removes one."""
    fields = mcp_servers.credential_fields()
    if request.method == "POST":
        server, name = request.POST.get("server", ""), request.POST.get("name", "")
        if not any(config.name == server and field == name for config, field in fields):
            flash.error(request, "No MCP server asks for that value.")
            return redirect("credential-list")
        if request.POST.get("action") == "remove":
            services.credential_delete(user=request.user, server=server, name=name)
            flash.success(request, f"Removed {name} for {server}.")
            return redirect("credential-list")
        try:
            services.credential_set(
                user=request.user, server=server, name=name, value=request.POST.get("value", "")
            )
        except InvalidInput as error:
            flash.error(request, f"{name} for {server}: {error}")
        else:
            flash.success(request, f"Saved {name} for {server}. It is not shown again.")
        return redirect("credential-list")
    saved = services.credentials_saved(user=request.user)
    rows = [
        {"server": config, "name": name, "saved": saved.get((config.name, name))}
        for config, name in fields
    ]
    return render(
        request,
        "settings/credentials.html",
        {"rows": rows, "max_length": services.CREDENTIAL_MAX_LENGTH},
    )


@require_POST
@login_required
def token_revoke(request: SignedInRequest, token_id: int) -> HttpResponse:
    try:
        token = tokens.token_get(user=request.user, token_id=token_id)
    except ApiToken.DoesNotExist:
        raise Http404("No such token.") from None
    tokens.token_revoke(token=token)
    flash.success(request, f"Revoked the token {token.prefix}… ({token.name or 'unnamed'}).")
    return redirect("token-list")
