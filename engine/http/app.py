"""HTTP/JSON beside gRPC: the same Guard, the contract's JSON in and out, errors as problem+json.

Handlers unpack, call the Guard, pack, and map domain errors (engine/api/errors.py) to the HTTP
status of the same gRPC code; nothing else. Blocking handlers run in Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from ..api.errors import ReloadUnavailableError, TooManyWatchersError
from ..api.paging import cursor, page_token
from ..contract import Action, InputError, format_time
from ..metrics import Metrics
from ..security.gate import CURRENT, Gate, known_caller, limited_caller, operator_action, requester, restart_reason
from ..security.identity import Peer
from ..security.limits import LimitError, Limits, LimitSettings
from ..security.roles import ROLES, Permission
from ..service import Guard, UnknownTestError
from ..store import Record
from .access import COOKIE, HttpAccess, identity_of, no_peer
from .dashboard import risk_dashboard
from .openapi import document
from .problem import problem, problem_of
from .routes import ROUTES
from .verdicts import HOOKS, Latest, argo_verdict, flagger_answer, flagger_test_id

MAX_BODY = 1 << 20  # bytes of a request body; a snapshot is a few KB
DRAINED = 64 << 20  # bytes of a too-large body read and dropped before answering 413
DEFAULT_PAGE, MAX_PAGE = 50, 500
DASHBOARD_DECISIONS = 240  # decisions the dashboard document reads: 2 hours of 30 s snapshots
Log = Callable[[dict[str, Any]], None]


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(
    guard: Guard, metrics: Metrics | None = None, log: Log | None = None, max_watchers: int = 8,
    gate: Gate | None = None, peer_of: Callable[[Any], Peer | None] = no_peer,
) -> Starlette:  # fmt: skip
    """The HTTP API; `gate`: who may call which route, and the limits (without one, anyone may do anything)."""
    api = _Api(guard, metrics, log, max_watchers, gate)
    table = [(path, getattr(api, handler), method, need) for path, handler, method, need in ROUTES]
    access = HttpAccess(gate, peer_of)
    routes = [
        Route(path, access.protect(handler, need, f"{method} {path.replace(':path', '')}"), methods=[method])
        for path, handler, method, need in table
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})


async def _not_found(request: Request, _error: Exception) -> Response:
    return problem(404, f"no such resource: {request.url.path}", "NOT_FOUND")


async def _not_allowed(request: Request, _error: Exception) -> Response:
    """405 with `Allow`: every method of every route on this path (Starlette's own names the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(405, detail, "METHOD_NOT_ALLOWED", headers={"Allow": ", ".join(sorted(methods))})


def _mapped(handler: Callable[[_Api, _Call], Response]) -> Callable[[_Api, Request], Awaitable[Response]]:
    """Run the blocking handler in the thread pool; domain errors become problems, bugs a logged 500."""

    async def call(self: _Api, request: Request) -> Response:
        body: bytes | None = None
        if request.method == "POST":
            body = await _bounded_body(request, self.max_body)
            if body is None:
                most = self.max_body
                return problem(413, f"the body is larger than {most} bytes, the most allowed", "CONTENT_TOO_LARGE")
        identity = identity_of(request)

        def run() -> Response:  # in the pool thread, as the caller it serves
            token = CURRENT.set(identity)
            try:
                return handler(self, _Call(request, body))
            finally:
                CURRENT.reset(token)

        try:
            return await run_in_threadpool(run)
        except Exception as error:
            mapped = problem_of(error)
            if mapped is not None:
                return mapped
            if self.log is not None:
                self.log({"event": "internal_error", "method": f"HTTP {handler.__name__}", "error": repr(error)[:1000]})
            return problem(500, f"internal error in {handler.__name__}: {type(error).__name__}", "INTERNAL")

    call.__name__ = handler.__name__
    return call


class _Call:
    """What a handler needs of the request, read on the event loop before the thread pool."""

    def __init__(self, request: Request, body: bytes | None) -> None:
        self.path = request.path_params
        self.query = request.query_params
        self.body = body

    def json(self) -> dict[str, Any]:
        try:
            value = orjson.loads(self.body or b"")
        except orjson.JSONDecodeError as error:
            raise InputError("body", f"not JSON: {error}") from None
        if not isinstance(value, dict):
            raise InputError("body", f"must be a JSON object, got {type(value).__name__}")
        return value

    def int_query(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InputError(name, f"must be a whole number, got {raw[:40]!r}") from None
        if value < 0:
            raise InputError(name, f"must be >= 0, got {value}")
        return value


class _Api:
    def __init__(
        self, guard: Guard, metrics: Metrics | None, log: Log | None, max_watchers: int, gate: Gate | None
    ) -> None:
        self.guard = guard
        self.metrics = metrics
        self.log = log
        self.max_watchers = max_watchers
        self._watch_slots = threading.BoundedSemaphore(max_watchers)
        self.gate = gate
        self.limits = gate.limits if gate is not None else Limits(LimitSettings())

    @property
    def max_body(self) -> int:
        """Bytes of a body at most: the auth file's request_bytes (read per request: it may be reloaded)."""
        return min(MAX_BODY, self.limits.settings.request_bytes)

    # --- the operations -----------------------------------------------------------------------
    @_mapped
    def evaluate(self, call: _Call) -> Response:
        started = time.perf_counter()
        body = call.json()
        identity = limited_caller()
        if identity is not None:
            self.limits.feed(identity.key, [str(body.get("test_id", ""))])
        decision = self.guard.evaluate(body)
        if self.metrics is not None:
            self.metrics.timed("http")(started)
        return JSON(decision)

    @_mapped
    def tests(self, call: _Call) -> Response:
        views = []
        for test_id in self.guard.tests():
            try:
                view = self.guard.test(test_id)
            except UnknownTestError:
                continue
            views.append(_view(view))
        return JSON({"tests": views, "policy": self._policy()})

    @_mapped
    def policy(self, call: _Call) -> Response:
        """GetPolicy over HTTP: the policy deciding now and the last one a reload refused."""
        return self._policy_status()

    def _policy_status(self) -> Response:
        status = self.guard.policy_status()
        active, rejected = status.active, status.rejected
        refused = None
        if rejected is not None:
            refused = {"digest": rejected.digest, "why": rejected.why, "rejected_at": rejected.at}
            refused["source"] = rejected.source
        return JSON(
            {
                "policy": self._policy(),
                "profile": active.profile or "",
                "environment": active.environment or "",
                "loaded_at": status.loaded_at,
                "rejected": refused,
            }
        )

    @_mapped
    def test(self, call: _Call) -> Response:
        return JSON({**_view(self.guard.test(_test_id(call))), "policy": self._policy()})

    @_mapped
    def decisions(self, call: _Call) -> Response:
        size = min(call.int_query("page_size", DEFAULT_PAGE) or DEFAULT_PAGE, MAX_PAGE)
        token = call.query.get("page_token")
        before = cursor(token) if token else None
        records = self.guard.decisions(_test_id(call), size + 1, before)
        body: dict[str, Any] = {"decisions": [r.decision for r in records[:size]]}
        if len(records) > size:
            body["next_page_token"] = page_token(records[size - 1].seq)
        return JSON(body)

    @_mapped
    def rollbacks(self, call: _Call) -> Response:
        size = min(call.int_query("page_size", DEFAULT_PAGE) or DEFAULT_PAGE, MAX_PAGE)
        now = self.guard.now()
        return JSON({"rollbacks": [r.to_dict(now) for r in self.guard.list_rollbacks(_test_id(call), size)]})

    @_mapped
    def report_step(self, call: _Call) -> Response:
        body = call.json()
        record = self.guard.report_step(
            _test_id(call), str(call.path["rollback_id"]), _text(body, "step"), _text(body, "outcome"),
            str(body.get("detail") or ""),
        )  # fmt: skip
        return JSON(record.to_dict(self.guard.now()))

    @_mapped
    def rollback(self, call: _Call) -> Response:
        body = call.json()
        stated = body.get("requested_by")
        who = requester(stated if isinstance(stated, str) else "")
        asked = self.guard.now()
        record = self.guard.rollback(_test_id(call), _text(body, "reason"), who)
        if self.metrics is not None and record.opened_at >= asked:  # not the record of an earlier rollback
            self.metrics.manual_rollback()
        if self.log is not None:
            self.log(
                {"event": "manual_rollback", "test_id": record.test_id, "rollback_id": record.rollback_id, "by": who}
            )
            self.log(operator_action("POST rollback", record.test_id, {"rollback_id": record.rollback_id}))
        return JSON(record.to_dict(self.guard.now()))

    @_mapped
    def restart(self, call: _Call) -> Response:
        reason = _text(call.json(), "reason")
        at = self.guard.restart(_test_id(call), restart_reason(reason))
        if self.log is not None:
            self.log(operator_action("POST restart", _test_id(call), {"reason": reason[:200]}))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        return JSON({"test_id": _test_id(call), "test_status": "running", "restarted_at": stamp})

    @_mapped
    def reload(self, call: _Call) -> Response:
        """ReloadPolicy over HTTP: try the policies folder now; the answer is GET /v1/policy after it."""
        reloader = self.guard.reloader
        if reloader is None:
            raise ReloadUnavailableError("this server does not reload policies (it was not started by abguard serve)")
        body = call.json() if call.body else {}
        reason = str(body.get("reason") or "").strip()[:200]
        source = f"POST /v1/policy/reload by {known_caller() or 'an unauthenticated caller'}"
        in_force = reloader.reload(source + (f": {reason}" if reason else ""))
        if self.log is not None:
            self.log(operator_action("POST reload", "", {"reason": reason, "in_force": in_force}))
        return self._policy_status()

    @_mapped
    def audit(self, call: _Call) -> Response:
        """The audit trail of one test, newest first: each stored record with the snapshot it decided and
        its place in the hash chain (`abguard audit verify` checks the same chain offline)."""
        size = min(call.int_query("page_size", DEFAULT_PAGE) or DEFAULT_PAGE, MAX_PAGE)
        token = call.query.get("page_token")
        records = self.guard.decisions(_test_id(call), size + 1, cursor(token) if token else None)
        body: dict[str, Any] = {"records": [_audit_record(r) for r in records[:size]]}
        if len(records) > size:
            body["next_page_token"] = page_token(records[size - 1].seq)
        return JSON(body)

    # --- who is calling -------------------------------------------------------------------------
    async def whoami(self, request: Request) -> Response:
        """The caller's identity, roles and permissions: what the dashboard shows and enables."""
        identity = identity_of(request)
        if identity is None or identity.via == "anonymous":  # no auth file: anyone may do anything
            return JSON({"identity": None, "via": "anonymous", "roles": sorted(ROLES), "permissions": _all()})
        permissions = sorted(p.value for p in identity.permissions)
        roles = sorted(identity.roles)
        return JSON({"identity": identity.name, "via": identity.via, "roles": roles, "permissions": permissions})

    async def open_session(self, request: Request) -> Response:
        """The dashboard's sign-in: the bearer token just checked becomes an HttpOnly, SameSite=Strict cookie."""
        header = request.headers.get("authorization", "")
        identity = identity_of(request)
        if identity is None or identity.via == "anonymous":
            return problem(400, "this server has no auth file: there is nothing to sign in to", "INVALID_ARGUMENT")
        if not header.lower().startswith("bearer "):
            return problem(400, "send the token as Authorization: Bearer <token> to open a session", "INVALID_ARGUMENT")
        response = await self.whoami(request)
        response.set_cookie(
            COOKIE, header.split(" ", 1)[1].strip(), httponly=True, samesite="strict",
            secure=request.url.scheme == "https", path="/", max_age=12 * 3600,
        )  # fmt: skip
        return response

    async def close_session(self, request: Request) -> Response:
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # --- what the controllers read ------------------------------------------------------------
    @_mapped
    def verdict(self, call: _Call) -> Response:
        """Argo Rollouts' Web metric: always 200, also for a test with no decision yet."""
        return JSON(argo_verdict(self._latest(_test_id(call))))

    @_mapped
    def flagger(self, call: _Call) -> Response:
        hook = str(call.path["hook"])
        if hook not in HOOKS:
            raise InputError("hook", f"{hook!r} is not a Flagger webhook type; one of {', '.join(HOOKS)}")
        payload = call.json()
        try:
            test_id = flagger_test_id(payload)
        except ValueError as error:
            field, _, message = str(error).partition(": ")
            raise InputError(field, message) from None
        latest = self._latest(test_id)
        status, reason = flagger_answer(hook, latest)
        body = {"test_id": test_id, "hook": hook, "phase": payload.get("phase"), "action": latest.action}
        return JSON({**body, "reason": reason}, status_code=status)

    @_mapped
    def dashboard(self, call: _Call) -> Response:
        records = self.guard.decisions(_test_id(call), DASHBOARD_DECISIONS, None)
        history = [(r.decision, r.snapshot) for r in reversed(records)]
        document = risk_dashboard(history, self.guard.policy)
        view = self.guard.test(_test_id(call))
        now = self.guard.now()
        rollbacks = [r.to_dict(now) for r in self.guard.list_rollbacks(view.test_id, 10)]
        return JSON({**document, "test": _view(view), "rollbacks": rollbacks})

    # --- watching -----------------------------------------------------------------------------
    async def watch(self, request: Request) -> Response:
        """Server-Sent Events of new decisions: `?test_id=a&test_id=b&action=rollback` narrow them."""
        actions = request.query_params.getlist("action")
        for index, word in enumerate(actions):
            if word not in {a.value for a in Action}:
                return problem(400, f"{word[:40]!r} is not an action", "INVALID_ARGUMENT", [(f"action[{index}]", word)])
        identity = identity_of(request)
        held = contextlib.ExitStack()
        if identity is not None and identity.via != "anonymous":  # per-identity limits count known callers
            try:
                held.enter_context(self.limits.watching(identity.key))
            except LimitError as error:
                return problem_of(error) or problem(429, str(error), "RESOURCE_EXHAUSTED")
        if not self._watch_slots.acquire(blocking=False):
            held.close()
            full = TooManyWatchersError(f"{self.max_watchers} watch streams are open, the most allowed; retry later")
            return problem_of(full) or problem(429, str(full), "RESOURCE_EXHAUSTED")
        try:
            watcher = self.guard.watch(frozenset(request.query_params.getlist("test_id")), frozenset(actions))
        except Exception as error:
            self._watch_slots.release()
            held.close()
            return problem_of(error) or problem(500, "internal error in watch", "INTERNAL")
        alive = threading.Event()
        alive.set()

        def events() -> Iterator[dict[str, str]]:
            try:
                for decision in self.guard.stream(watcher, alive.is_set):
                    yield {"event": "decision", "id": decision["decision_id"], "data": orjson.dumps(decision).decode()}
            finally:
                self._watch_slots.release()
                held.close()

        return EventSourceResponse(events(), ping=15, client_close_handler_callable=_closer(alive))

    # --- health, metrics, documents -------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return JSON({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        if self.guard.serving:
            return JSON({"status": "ready"})
        return problem(503, "not ready: rebuilding state, or the decision log cannot be written", "UNAVAILABLE")

    async def metrics_text(self, request: Request) -> Response:
        if self.metrics is None:
            return problem(404, "this server keeps no metrics", "NOT_FOUND")
        text = await run_in_threadpool(generate_latest, self.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return JSON(document())

    async def page(self, request: Request) -> Response:
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    async def static(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        kinds = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
        kind = next((v for k, v in kinds.items() if name.endswith(k)), None)
        if kind is None or "/" in name or name.startswith("."):
            return problem(404, f"no such file: {name[:60]}", "NOT_FOUND")
        try:
            return Response(_static(name), media_type=kind)
        except FileNotFoundError:
            return problem(404, f"no such file: {name[:60]}", "NOT_FOUND")

    # --- helpers ------------------------------------------------------------------------------
    def _policy(self) -> dict[str, Any]:
        policy = self.guard.policy
        return {"name": policy.name, "version": policy.version, "digest": policy.digest}

    def _latest(self, test_id: str) -> Latest:
        try:
            view = self.guard.test(test_id)
        except UnknownTestError:
            return Latest(test_id, None, None, None, f"no decision yet for test {test_id}", "no_data", self._policy())
        decision = view.last_decision
        return Latest(
            test_id, decision["action"], decision["risk_score"], decision["risk_level"], decision["reason"],
            view.test_status, decision.get("policy") or self._policy(),
        )  # fmt: skip


async def _bounded_body(request: Request, most: int) -> bytes | None:
    """The body, held no further than `most` bytes: None when it is longer. A longer body is read on
    and dropped up to DRAINED bytes, so the client, still sending, reads our 413 instead of a reset;
    past that the connection is closed on it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAINED:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAINED:
            return None
        if size <= most:
            chunks.append(chunk)
    return b"".join(chunks) if size <= most else None


def _audit_record(record: Record) -> dict[str, Any]:
    return {
        "seq": record.seq, "test_id": record.test_id, "received_at": format_time(record.received_at),
        "prev_hash": record.prev_hash, "hash": record.hash, "snapshot": record.snapshot, "decision": record.decision,
    }  # fmt: skip


def _all() -> list[str]:
    return sorted(p.value for p in Permission)


def _closer(alive: threading.Event) -> Callable[[Any], Any]:
    async def close(_message: Any) -> None:
        alive.clear()

    return close


def _view(view: Any) -> dict[str, Any]:
    decision = view.last_decision
    return {
        "test_id": view.test_id,
        "test_status": view.test_status,
        "target_rollout_percent": view.target_rollout_percent,
        "rolled_back_at": view.rolled_back_at or None,
        "decisions": view.decisions,
        "last_decision": decision,
    }


def _test_id(call: _Call) -> str:
    value = str(call.path.get("test_id", ""))
    if not value.strip():
        raise InputError("test_id", "required: a non-empty string")
    return value


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, "required: a non-empty string")
    return value


def _static(name: str) -> bytes:
    return resources.files("engine.http").joinpath("static", name).read_bytes()
