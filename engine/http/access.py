"""The Gate in front of every HTTP route: 401 with WWW-Authenticate, 403 naming the missing role, 429
with Retry-After, as problem+json, before the handler runs.

Credentials: `Authorization: Bearer ...`, the verified client certificate, or for the dashboard in
a browser the `abguard_token` cookie set by POST /v1/session (EventSource cannot send headers). The
cookie is HttpOnly and SameSite=Strict, and a request it authenticates that changes anything must
also carry `X-Abguard-Dashboard: 1`, a header no other site's page can add without our consent (CORS).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..security.gate import CURRENT, Denied, Gate
from ..security.identity import Identity, Peer
from ..security.roles import Permission
from .problem import problem

COOKIE = "abguard_token"
DASHBOARD_HEADER = "x-abguard-dashboard"
OPEN, HEALTH, METRICS, IDENTIFIED = "open", "health", "metrics", "identified"  # needs besides a Permission
Need = Permission | str
Endpoint = Callable[[Request], Awaitable[Response]]
STATUS = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429}


def no_peer(scope: Any) -> Peer | None:
    return None


class HttpAccess:
    """Wraps endpoints with what they need; without a gate every caller may do anything."""

    def __init__(self, gate: Gate | None, peer_of: Callable[[Any], Peer | None] = no_peer) -> None:
        self.gate, self.peer_of = gate, peer_of

    def protect(self, endpoint: Endpoint, need: Need, what: str) -> Endpoint:
        gate = self.gate
        if gate is None or need == OPEN:
            return endpoint

        async def call(request: Request) -> Response:
            if need in (HEALTH, METRICS) and gate.is_open(str(need)):
                return await endpoint(request)
            permission = _permission(need)
            called = f"{request.method} {request.url.path[:200]}"  # the test named, not the route's pattern
            try:
                authorization = self._authorization(request)
                identity = (
                    gate.identify(authorization, self.peer_of(request.scope), _host(request), called)
                    if permission is None
                    else gate.admit(called, permission, authorization, self.peer_of(request.scope), _host(request))
                )
            except Denied as denied:
                return refusal(denied)
            request.scope["abguard.identity"] = identity
            token = CURRENT.set(identity)
            try:
                return await endpoint(request)
            finally:
                CURRENT.reset(token)

        call.__name__ = getattr(endpoint, "__name__", what)
        return call

    def _authorization(self, request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header:
            return header
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        if request.method not in ("GET", "HEAD") and request.headers.get(DASHBOARD_HEADER) != "1":
            raise Denied(
                "PERMISSION_DENIED",
                f"a {request.method} authenticated by the dashboard's cookie must carry {DASHBOARD_HEADER}: 1"
                " (it keeps other sites' pages from acting in your name)",
            )
        return f"Bearer {cookie}"


def refusal(denied: Denied) -> Response:
    status = STATUS.get(denied.code, 403)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="abguard"'
    if denied.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(denied.retry_after)))
    return problem(status, denied.message, denied.code, headers=headers or None)


def identity_of(request: Request) -> Identity | None:
    value = request.scope.get("abguard.identity")
    return value if isinstance(value, Identity) else None


def _permission(need: Need) -> Permission | None:
    if isinstance(need, Permission):
        return need
    return {HEALTH: Permission.READ, METRICS: Permission.METRICS}.get(str(need))  # IDENTIFIED: anyone known


def _host(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"
