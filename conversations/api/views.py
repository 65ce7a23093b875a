"""The HTTP API (docs/api.md, "HTTP"): list, start, read, delete and export conversations."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.core.paginator import InvalidPage, Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from .. import actions, services
from ..models import Conversation
from ..refusals import InvalidInput
from .auth import TokenRequest, token_required
from .errors import error_response
from .export import conversation_document, export_response
from .protocol import conversation_state

PAGE_SIZE = 20


class BadRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def api_view(*methods: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """An API view: these methods only (405 otherwise), a token's user, JSON errors."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        authenticated = token_required(view)

        @functools.wraps(authenticated)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error_response(
                    status=405,
                    code="method_not_allowed",
                    message=f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return authenticated(request, *args, **kwargs)
            except Conversation.DoesNotExist:
                return error_response(status=404, code="not_found", message=NOT_FOUND)
            except BadRequest as bad:
                return error_response(status=400, code=bad.code, message=str(bad))

        return checked

    return decorate


NOT_FOUND = "There is no such conversation."


@api_view("GET", "POST")
def conversations(request: TokenRequest) -> HttpResponse:
    if request.method == "POST":
        return conversation_create(request)
    pages = Paginator(services.conversation_list(user=request.user), PAGE_SIZE)
    try:
        page = pages.page(request.GET.get("page", "1"))
    except InvalidPage:
        raise BadRequest(
            "invalid_page", f"page must be a whole number from 1 to {pages.num_pages}."
        ) from None
    url = reverse("api-conversations")
    return JsonResponse(
        {
            "count": pages.count,
            "page": page.number,
            "pages": pages.num_pages,
            "next": f"{url}?page={page.next_page_number()}" if page.has_next() else None,
            "previous": f"{url}?page={page.previous_page_number()}"
            if page.has_previous()
            else None,
            "results": [conversation_state(conversation) for conversation in page],
        }
    )


def conversation_create(request: TokenRequest) -> HttpResponse:
    body = json_body(request)
    choices: dict[str, str] = {}
    for name in ("model", "api_style"):
        if name in body:
            if not isinstance(body[name], str):
                raise BadRequest("invalid_input", f"{name} must be a string.")
            choices[name] = body[name]
    try:
        conversation = services.conversation_create(
            owner=request.user, model=choices.get("model"), api_style=choices.get("api_style")
        )
    except InvalidInput as error:
        raise BadRequest("invalid_input", str(error)) from None
    return JsonResponse(conversation_state(conversation), status=201)


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object."""
    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("invalid_json", "The body is not JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid_json", "The body must be a JSON object.")
    return body


@api_view("GET", "DELETE")
def conversation(request: TokenRequest, conversation_id: int) -> HttpResponse:
    found = services.conversation_get(user=request.user, conversation_id=conversation_id)
    if request.method == "DELETE":
        async_to_sync(actions.conversation_delete)(conversation=found)
        return HttpResponse(status=204)
    messages = services.message_list(conversation=found)
    return JsonResponse(conversation_document(conversation=found, messages=messages))


@api_view("GET")
def export_json(request: TokenRequest, conversation_id: int) -> HttpResponse:
    found = services.conversation_get(user=request.user, conversation_id=conversation_id)
    return export_response(conversation=found, kind="json")


@api_view("GET")
def export_markdown(request: TokenRequest, conversation_id: int) -> HttpResponse:
    found = services.conversation_get(user=request.user, conversation_id=conversation_id)
    return export_response(conversation=found, kind="markdown")
