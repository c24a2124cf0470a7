"""Errors as RFC 9457 problem+json, with the status that matches the gRPC code of the same error."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from google.rpc import code_pb2
from starlette.responses import Response

from ..api.errors import status_of

PROBLEM = "application/problem+json"
HTTP_OF = {
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.NOT_FOUND: 404,
    code_pb2.FAILED_PRECONDITION: 409,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.INTERNAL: 500,
    code_pb2.DEADLINE_EXCEEDED: 504,
}
TITLE = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
         413: "Content Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
         503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


def problem(
    status: int, detail: str, code: str, errors: list[tuple[str, str]] = (),  # type: ignore[assignment]
    headers: dict[str, str] | None = None, **extra: Any,
) -> Response:  # fmt: skip
    """One problem document; `errors` name the fields to blame (`challenger.requests`)."""
    body: dict[str, Any] = {
        "type": f"https://abguard.dev/problems/{code.lower().replace('_', '-')}",
        "title": TITLE.get(status) or _phrase(status),
        "status": status,
        "detail": detail[:4000],
        "code": code,
    }
    if errors:
        body["errors"] = [{"field": field, "message": message[:500]} for field, message in errors[:50]]
    body.update(extra)
    if headers is None and status in (429, 503):
        headers = {"Retry-After": "1"}
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def problem_of(error: Exception) -> Response | None:
    """The problem a domain error maps to; None for a bug of ours (the caller logs it, answers 500)."""
    mapped = status_of(error)
    if mapped is None:
        return None
    code, message, violations = mapped
    return problem(HTTP_OF.get(code, 500), message, code_pb2.Code.Name(code), violations)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
