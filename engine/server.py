"""gRPC transport: unpack, call the Guard, pack, map domain errors to status codes. Nothing else."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from .api.convert import enum_value, fill_decision, snapshot_to_dict
from .api.v1 import risk_pb2 as pb
from .api.v1 import risk_pb2_grpc as rpc
from .evaluator import OutOfOrderError
from .guard import Guard, UnknownTestError, Watcher
from .snapshot import InputError

SERVICE = pb.DESCRIPTOR.services_by_name["RiskService"].full_name
DEFAULT_PAGE, MAX_PAGE = 50, 500
Reply = TypeVar("Reply")


def _abort(context: grpc.ServicerContext, code: int, message: str, field: str | None = None) -> None:
    """End the call with a google.rpc.Status; a BadRequest field violation when a field is to blame."""
    status = status_pb2.Status(code=code, message=message)
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    context.abort_with_status(rpc_status.to_status(status))


def _mapped(method: Callable[..., Reply]) -> Callable[..., Reply]:
    """Domain errors become status codes; nothing escapes as UNKNOWN."""

    @wraps(method)
    def call(self: RiskServicer, request: Any, context: grpc.ServicerContext) -> Reply:
        try:
            return method(self, request, context)
        except InputError as error:
            _abort(context, code_pb2.INVALID_ARGUMENT, str(error), error.field)
        except OutOfOrderError as error:
            _abort(context, code_pb2.FAILED_PRECONDITION, str(error), "snapshot.timestamp")
        except UnknownTestError as error:
            _abort(context, code_pb2.NOT_FOUND, str(error), "test_id")
        except TooManyWatchersError as error:
            _abort(context, code_pb2.RESOURCE_EXHAUSTED, str(error))
        except Exception as error:  # a bug of ours: say so, keep serving
            print(
                json.dumps({"event": "internal_error", "method": method.__name__, "error": repr(error)}),
                file=sys.stderr,
                flush=True,
            )
            _abort(context, code_pb2.INTERNAL, f"internal error in {method.__name__}: {type(error).__name__}")
        raise AssertionError("unreachable")  # abort raises

    return call


class TooManyWatchersError(RuntimeError):
    """Each watch stream holds a worker thread; past the limit Evaluate would starve."""


class RiskServicer(rpc.RiskServiceServicer):  # type: ignore[misc]  # generated base class is untyped
    def __init__(
        self, guard: Guard, log_line: Callable[[dict[str, Any]], None] | None = None, max_watchers: int = 4
    ) -> None:
        self.guard = guard
        self.log_line = log_line
        self.max_watchers = max_watchers
        self._watch_slots = threading.BoundedSemaphore(max_watchers)

    @_mapped
    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext) -> pb.EvaluateResponse:
        start = time.perf_counter()
        if not request.HasField("snapshot"):
            raise InputError("snapshot", "required: the request carries no snapshot")
        try:
            decision = self.guard.evaluate(snapshot_to_dict(request.snapshot))
        except InputError as error:  # fields are named from the request: snapshot.challenger.requests
            raise InputError(f"snapshot.{error.field}", error.message) from None
        response = pb.EvaluateResponse()
        fill_decision(response, decision)
        if self.log_line is not None:
            self.log_line(
                {
                    "event": "decision",
                    "decision_id": decision["decision_id"],
                    "test_id": decision["test_id"],
                    "timestamp": decision["timestamp"],
                    "action": decision["action"],
                    "risk_score": decision["risk_score"],
                    "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                }
            )
        return response

    @_mapped
    def GetTest(self, request: pb.GetTestRequest, context: grpc.ServicerContext) -> pb.GetTestResponse:
        view = self.guard.test(_test_id(request.test_id))
        response = pb.GetTestResponse(
            test_id=view.test_id,
            test_status=enum_value(pb.TestStatus, "TEST_STATUS_", view.test_status),
            rolled_back_at=view.rolled_back_at,
            decisions=view.decisions,
        )
        if view.target_rollout_percent is not None:
            response.target_rollout_percent = view.target_rollout_percent
        fill_decision(response.last_decision, view.last_decision)
        policy = self.guard.policy
        response.policy.name, response.policy.version, response.policy.digest = (
            policy.name,
            policy.version,
            policy.digest,
        )
        return response

    @_mapped
    def RestartTest(self, request: pb.RestartTestRequest, context: grpc.ServicerContext) -> pb.RestartTestResponse:
        if not request.reason.strip():
            raise InputError("reason", "required: say why the test may run again (it is recorded)")
        at = self.guard.restart(_test_id(request.test_id), request.reason)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        return pb.RestartTestResponse(test_id=request.test_id, test_status=pb.TEST_STATUS_RUNNING, restarted_at=stamp)

    @_mapped
    def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: grpc.ServicerContext
    ) -> pb.ListDecisionsResponse:
        if request.page_size < 0:
            raise InputError("page_size", f"must be >= 0, got {request.page_size}")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        before = _cursor(request.page_token) if request.page_token else None
        records = self.guard.decisions(_test_id(request.test_id), size + 1, before)
        response = pb.ListDecisionsResponse()
        for record in records[:size]:
            fill_decision(response.decisions.add(), record.decision)
        if len(records) > size:
            response.next_page_token = base64.urlsafe_b64encode(str(records[size - 1].seq).encode()).decode()
        return response

    def WatchDecisions(self, request: pb.WatchDecisionsRequest, context: grpc.ServicerContext) -> Iterator[pb.Decision]:
        watcher = self._open_watch(request, context)
        try:
            for decision in self.guard.stream(watcher, context.is_active):
                message = pb.Decision()
                fill_decision(message, decision)
                yield message
        finally:
            self._watch_slots.release()
        if watcher.dropped:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "watcher fell too far behind; reconnect")

    @_mapped
    def _open_watch(self, request: pb.WatchDecisionsRequest, context: grpc.ServicerContext) -> Watcher:
        names = []
        for index, number in enumerate(request.actions):
            if number not in pb.Action.values() or number == pb.ACTION_UNSPECIFIED:
                raise InputError(f"actions[{index}]", f"{number} is not an Action")
            names.append(pb.Action.Name(number).removeprefix("ACTION_").lower())
        if not self._watch_slots.acquire(blocking=False):
            raise TooManyWatchersError(
                f"{self.max_watchers} watch streams are open, the most this server allows; close one or retry"
            )
        return self.guard.watch(frozenset(request.test_ids), frozenset(names))


def _test_id(value: str) -> str:
    if not value.strip():
        raise InputError("test_id", "required: a non-empty string")
    return value


def _cursor(token: str) -> int:
    try:
        seq = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        seq = -1
    if not 0 < seq < 2**62:
        raise InputError("page_token", "not a token this service gave out")
    return seq


def create_server(
    guard: Guard,
    address: str,
    workers: int = 16,
    log_line: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-ready (not yet started) server bound to `address`; port 0 picks a free port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="abguard-rpc"),
        options=[("grpc.so_reuseport", 0), ("grpc.max_connection_age_ms", 300_000)],
    )
    # watch streams each hold a worker thread: a quarter of the pool at most, so Evaluate keeps flowing
    rpc.add_RiskServiceServicer_to_server(RiskServicer(guard, log_line, max(1, workers // 4)), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer
