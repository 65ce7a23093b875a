"""The HTTP API's error answers: `{"error": {"code": ..., "message": ...}}` with a 4xx status."""

from __future__ import annotations

from django.http import JsonResponse


def error_response(*, status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)
