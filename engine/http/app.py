"""HTTP/JSON beside gRPC: the same Guard, the contract's JSON in and out, errors as problem+json.

Handlers unpack, call the Guard, pack, and map domain errors (engine/api/errors.py) to the HTTP
status of the same gRPC code; nothing else. Blocking handlers run in Starlette's thread pool.
"""

from __future__ import annotations

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
from starlette.routing import Route

from ..api.errors import TooManyWatchersError
from ..api.paging import cursor, page_token
from ..contract import Action, InputError
from ..metrics import Metrics
from ..service import Guard, UnknownTestError
from .dashboard import risk_dashboard
from .openapi import document
from .problem import problem, problem_of
from .verdicts import HOOKS, Latest, argo_verdict, flagger_answer, flagger_test_id

MAX_BODY = 1 << 20  # bytes of a request body; a snapshot is a few KB
DEFAULT_PAGE, MAX_PAGE = 50, 500
DASHBOARD_DECISIONS = 240  # decisions the dashboard document reads: 2 hours of 30 s snapshots
Log = Callable[[dict[str, Any]], None]


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(
    guard: Guard, metrics: Metrics | None = None, log: Log | None = None, max_watchers: int = 8
) -> Starlette:
    api = _Api(guard, metrics, log, max_watchers)
    routes = [
        Route("/v1/evaluate", api.evaluate, methods=["POST"]),
        Route("/v1/tests", api.tests, methods=["GET"]),
        Route("/v1/policy", api.policy, methods=["GET"]),
        Route("/v1/tests/{test_id:path}/decisions", api.decisions, methods=["GET"]),
        Route("/v1/tests/{test_id:path}/rollbacks", api.rollbacks, methods=["GET"]),
        Route("/v1/tests/{test_id:path}/rollbacks/{rollback_id}/steps", api.report_step, methods=["POST"]),
        Route("/v1/tests/{test_id:path}/rollback", api.rollback, methods=["POST"]),
        Route("/v1/tests/{test_id:path}/restart", api.restart, methods=["POST"]),
        Route("/v1/tests/{test_id:path}/verdict", api.verdict, methods=["GET"]),
        Route("/v1/tests/{test_id:path}/dashboard", api.dashboard, methods=["GET"]),
        Route("/v1/tests/{test_id:path}", api.test, methods=["GET"]),
        Route("/v1/flagger/{hook}", api.flagger, methods=["POST"]),
        Route("/v1/watch", api.watch, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics_text, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/", api.page, methods=["GET"]),
        Route("/static/{name}", api.static, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})


async def _not_found(request: Request, _error: Exception) -> Response:
    return problem(404, f"no such resource: {request.url.path}", "NOT_FOUND")


async def _not_allowed(request: Request, _error: Exception) -> Response:
    return problem(405, f"{request.method} is not allowed on {request.url.path}", "METHOD_NOT_ALLOWED")


def _mapped(handler: Callable[[_Api, _Call], Response]) -> Callable[[_Api, Request], Awaitable[Response]]:
    """Run the blocking handler in the thread pool; domain errors become problems, bugs a logged 500."""

    async def call(self: _Api, request: Request) -> Response:
        body: bytes | None = None
        if request.method == "POST":
            body = await request.body()
            if len(body) > MAX_BODY:
                return problem(413, f"the body is {len(body)} bytes; at most {MAX_BODY}", "CONTENT_TOO_LARGE")
        try:
            return await run_in_threadpool(handler, self, _Call(request, body))
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
    def __init__(self, guard: Guard, metrics: Metrics | None, log: Log | None, max_watchers: int) -> None:
        self.guard = guard
        self.metrics = metrics
        self.log = log
        self.max_watchers = max_watchers
        self._watch_slots = threading.BoundedSemaphore(max_watchers)

    # --- the operations -----------------------------------------------------------------------
    @_mapped
    def evaluate(self, call: _Call) -> Response:
        started = time.perf_counter()
        decision = self.guard.evaluate(call.json())
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
        who = _text(body, "requested_by")
        asked = self.guard.now()
        record = self.guard.rollback(_test_id(call), _text(body, "reason"), who)
        if self.metrics is not None and record.opened_at >= asked:  # not the record of an earlier rollback
            self.metrics.manual_rollback()
        if self.log is not None:
            self.log(
                {"event": "manual_rollback", "test_id": record.test_id, "rollback_id": record.rollback_id, "by": who}
            )
        return JSON(record.to_dict(self.guard.now()))

    @_mapped
    def restart(self, call: _Call) -> Response:
        at = self.guard.restart(_test_id(call), _text(call.json(), "reason"))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        return JSON({"test_id": _test_id(call), "test_status": "running", "restarted_at": stamp})

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
        if not self._watch_slots.acquire(blocking=False):
            error = TooManyWatchersError(f"{self.max_watchers} watch streams are open, the most allowed; retry later")
            return problem_of(error) or problem(429, str(error), "RESOURCE_EXHAUSTED")
        try:
            watcher = self.guard.watch(frozenset(request.query_params.getlist("test_id")), frozenset(actions))
        except Exception as error:
            self._watch_slots.release()
            return problem_of(error) or problem(500, "internal error in watch", "INTERNAL")
        alive = threading.Event()
        alive.set()

        def events() -> Iterator[dict[str, str]]:
            try:
                for decision in self.guard.stream(watcher, alive.is_set):
                    yield {"event": "decision", "id": decision["decision_id"], "data": orjson.dumps(decision).decode()}
            finally:
                self._watch_slots.release()

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
