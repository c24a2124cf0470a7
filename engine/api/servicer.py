"""gRPC transport: unpack, call the Guard, pack, map domain errors to status codes. Nothing else."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..contract import InputError, excerpt
from ..metrics import Metrics
from ..rollback.process import Rollback
from ..security.gate import Gate, known_caller, limited_caller, operator_action, requester, restart_reason
from ..security.limits import LimitError, Limits, LimitSettings
from ..service import Guard, Watcher
from .access import PeerOf, abort, guarded, no_peer
from .convert import enum_number, enum_word, fill, present
from .errors import DeadlinePassedError, ReloadUnavailableError, TooManyWatchersError, status_of
from .paging import cursor, page_token
from .v1 import risk_pb2 as pb

if TYPE_CHECKING:  # cryptography loads only with --tls-cert
    from ..security.tls import ServerTls

SERVICE = pb.DESCRIPTOR.services_by_name["RiskService"]
DEFAULT_PAGE, MAX_PAGE = 50, 500
MAX_MESSAGE = 4000  # characters of an error message: well inside gRPC's 8 KiB metadata limit
Reply = TypeVar("Reply")
Log = Callable[[dict[str, Any]], None]


class Undecodable:
    """A request whose bytes are not the method's message: the caller's fault, not ours."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _mapped(method: Callable[..., Reply]) -> Callable[..., Reply]:
    """Domain errors become status codes; nothing escapes as UNKNOWN."""

    @wraps(method)
    def call(self: RiskServicer, request: Any, context: grpc.ServicerContext) -> Reply:
        try:
            if isinstance(request, Undecodable):
                article = "an" if method.__name__[0] in "AEIOU" else "a"
                raise InputError("request", f"not {article} {method.__name__} request: {excerpt(str(request.error))}")
            return method(self, request, context)
        except Exception as error:
            self._fail(context, method.__name__, error)
        raise AssertionError("unreachable")  # abort raises

    return call


class RiskServicer:
    def __init__(
        self, guard: Guard, log: Log | None = None, max_watchers: int = 4, metrics: Metrics | None = None,
        limits: Limits | None = None,
    ) -> None:  # fmt: skip
        self.guard = guard
        self.log = log
        self.metrics = metrics
        self.max_watchers = max_watchers
        self._watch_slots = threading.BoundedSemaphore(max_watchers)
        self.limits = limits or Limits(LimitSettings())

    def _fail(self, context: grpc.ServicerContext, method: str, error: Exception) -> None:
        mapped = status_of(error)
        if mapped is None:  # a bug of ours: say so, keep serving
            if self.log is not None:
                self.log({"event": "internal_error", "method": method, "error": repr(error)[:1000]})
            mapped = code_pb2.INTERNAL, f"internal error in {method}: {type(error).__name__}", []
        abort(context, *mapped, retry_after=error.retry_after if isinstance(error, LimitError) else None)

    def _feeding(self, context: grpc.ServicerContext, test_ids: list[str]) -> None:
        """Before deciding: the call's deadline has not passed, and its caller may send these tests."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlinePassedError("the call's deadline passed before it was decided; nothing was kept")
        identity = limited_caller()
        if identity is not None:
            self.limits.feed(identity.key, test_ids)

    @_mapped
    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext) -> pb.EvaluateResponse:
        start = time.perf_counter()
        if not request.HasField("snapshot"):
            raise InputError("snapshot", "required: the request carries no snapshot")
        self._feeding(context, [request.snapshot.test_id])
        try:
            decision = self.guard.evaluate(present(request.snapshot))
        except InputError as error:  # fields are named from the request: snapshot.challenger.requests
            raise error.under("snapshot") from None
        response = pb.EvaluateResponse()
        fill(response.decision, decision)
        if self.metrics is not None:
            self.metrics.timed("grpc")(start)
        if self.log is not None:
            self.log(
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
    def EvaluateBatch(
        self, request: pb.EvaluateBatchRequest, context: grpc.ServicerContext
    ) -> pb.EvaluateBatchResponse:
        self._feeding(context, [snapshot.test_id for snapshot in request.snapshots])
        return self._batch(request)

    def EvaluateStream(
        self, requests: Iterator[pb.EvaluateBatchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.EvaluateBatchResponse]:
        try:
            for request in requests:
                if isinstance(request, Undecodable):
                    raise InputError("request", f"not an EvaluateBatchRequest: {excerpt(str(request.error))}")
                self._feeding(context, [snapshot.test_id for snapshot in request.snapshots])
                yield self._batch(request)
        except grpc.RpcError:  # the client went away
            return
        except Exception as error:
            self._fail(context, "EvaluateStream", error)

    def _batch(self, request: pb.EvaluateBatchRequest) -> pb.EvaluateBatchResponse:
        """One batch: each snapshot's decision or error, in order; the log's trouble fails it whole."""
        start = time.perf_counter()
        count, most = len(request.snapshots), self.limits.settings.items_per_batch
        if count > most:
            raise InputError("snapshots", f"at most {most} snapshots in one batch, got {count}: split it")
        outcomes = self.guard.evaluate_many([present(snapshot) for snapshot in request.snapshots])
        response = pb.EvaluateBatchResponse()
        errors = 0
        for index, outcome in enumerate(outcomes):
            result = response.results.add()
            if isinstance(outcome, dict):
                fill(result.decision, outcome)
                continue
            errors += 1
            mapped = status_of(outcome.under(f"snapshots[{index}]") if isinstance(outcome, InputError) else outcome)
            assert mapped is not None  # evaluate_many returns input and ordering errors only
            code, message, violations = mapped
            result.error.code = code_pb2.Code.Name(code)
            result.error.message = message[:MAX_MESSAGE]
            for field, text in violations[:50]:
                result.error.violations.add(
                    field=field.replace("snapshot.", f"snapshots[{index}].", 1), description=text[:500]
                )
        if self.metrics is not None:
            self.metrics.timed("grpc")(start)
        if self.log is not None:
            latency = round((time.perf_counter() - start) * 1000, 3)
            self.log({"event": "batch", "snapshots": count, "errors": errors, "latency_ms": latency})
        return response

    @_mapped
    def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.ServicerContext) -> pb.GetPolicyResponse:
        return self._policy_status()

    @_mapped
    def ReloadPolicy(self, request: pb.ReloadPolicyRequest, context: grpc.ServicerContext) -> pb.GetPolicyResponse:
        reloader = self.guard.reloader
        if reloader is None:
            raise ReloadUnavailableError("this server does not reload policies (it was not started by abguard serve)")
        reason = request.reason.strip()[:200]
        source = f"ReloadPolicy by {known_caller() or 'an unauthenticated caller'}" + (f": {reason}" if reason else "")
        reloaded = reloader.reload(source)
        self._operator_action("ReloadPolicy", "", {"reason": reason, "in_force": reloaded})
        return self._policy_status()

    def _policy_status(self) -> pb.GetPolicyResponse:
        status = self.guard.policy_status()
        policy = status.active
        response = pb.GetPolicyResponse(
            profile=policy.profile or "", environment=policy.environment or "", loaded_at=status.loaded_at
        )
        fill(response.policy, {"name": policy.name, "version": policy.version, "digest": policy.digest})
        if status.rejected is not None:
            rejected = status.rejected
            response.rejected.CopyFrom(
                pb.RejectedPolicy(
                    digest=rejected.digest,
                    why=rejected.why[:MAX_MESSAGE],
                    rejected_at=rejected.at,
                    source=rejected.source,
                )
            )
        return response

    @_mapped
    def GetTest(self, request: pb.GetTestRequest, context: grpc.ServicerContext) -> pb.GetTestResponse:
        view = self.guard.test(_test_id(request.test_id))
        response = pb.GetTestResponse(
            test_id=view.test_id,
            test_status=enum_number(pb.TestStatus.DESCRIPTOR, view.test_status),  # type: ignore[arg-type]
            rolled_back_at=view.rolled_back_at,
            decisions=view.decisions,
        )
        if view.target_rollout_percent is not None:
            response.target_rollout_percent = view.target_rollout_percent
        fill(response.last_decision, view.last_decision)
        policy = self.guard.policy
        fill(response.policy, {"name": policy.name, "version": policy.version, "digest": policy.digest})
        return response

    @_mapped
    def RestartTest(self, request: pb.RestartTestRequest, context: grpc.ServicerContext) -> pb.RestartTestResponse:
        if not request.reason.strip():
            raise InputError("reason", "required: say why the test may run again (it is recorded)")
        test_id = _test_id(request.test_id)
        at = self.guard.restart(test_id, restart_reason(request.reason))
        self._operator_action("RestartTest", test_id, {"reason": request.reason[:200]})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        return pb.RestartTestResponse(test_id=request.test_id, test_status=pb.TEST_STATUS_RUNNING, restarted_at=stamp)

    @_mapped
    def GetRollback(self, request: pb.GetRollbackRequest, context: grpc.ServicerContext) -> pb.Rollback:
        record = self.guard.get_rollback(_test_id(request.test_id), request.rollback_id)
        return _rollback(record, self.guard.now())

    @_mapped
    def ListRollbacks(
        self, request: pb.ListRollbacksRequest, context: grpc.ServicerContext
    ) -> pb.ListRollbacksResponse:
        if request.page_size < 0:
            raise InputError("page_size", f"must not be negative, got {request.page_size}")
        test_id = _test_id(request.test_id) if request.test_id else ""
        records = self.guard.list_rollbacks(test_id, min(request.page_size or DEFAULT_PAGE, MAX_PAGE))
        now = self.guard.now()
        return pb.ListRollbacksResponse(rollbacks=[_rollback(record, now) for record in records])

    @_mapped
    def ReportRollbackStep(self, request: pb.ReportRollbackStepRequest, context: grpc.ServicerContext) -> pb.Rollback:
        record = self.guard.report_step(
            _test_id(request.test_id),
            _required(request.rollback_id, "rollback_id", "the rollback the step belongs to (GetRollback)"),
            _required(request.step, "step", "the step done, e.g. traffic_cutoff"),
            _required(request.outcome, "outcome", "done, failed or skipped"),
            request.detail,
        )
        return _rollback(record, self.guard.now())

    @_mapped
    def RollbackTest(self, request: pb.RollbackTestRequest, context: grpc.ServicerContext) -> pb.Rollback:
        reason = _required(request.reason, "reason", "say why the test is rolled back (it is recorded)")
        who = requester(request.requested_by)
        asked = self.guard.now()
        record = self.guard.rollback(_test_id(request.test_id), reason, who)
        if self.metrics is not None and record.opened_at >= asked:  # not the record of an earlier rollback
            self.metrics.manual_rollback()
        if self.log is not None:
            self.log(
                {"event": "manual_rollback", "test_id": record.test_id, "rollback_id": record.rollback_id, "by": who}
            )
        self._operator_action("RollbackTest", record.test_id, {"rollback_id": record.rollback_id})
        return _rollback(record, self.guard.now())

    def _operator_action(self, method: str, test_id: str, detail: dict[str, Any]) -> None:
        """Every operator action in the service log with the identity that did it (the audit of the guard)."""
        if self.log is not None:
            self.log(operator_action(method, test_id, detail))

    @_mapped
    def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: grpc.ServicerContext
    ) -> pb.ListDecisionsResponse:
        if request.page_size < 0:
            raise InputError("page_size", f"must be >= 0, got {request.page_size}")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        before = cursor(request.page_token) if request.page_token else None
        records = self.guard.decisions(_test_id(request.test_id), size + 1, before)
        response = pb.ListDecisionsResponse()
        for record in records[:size]:
            fill(response.decisions.add(), record.decision)
        if len(records) > size:
            response.next_page_token = page_token(records[size - 1].seq)
        return response

    def WatchDecisions(self, request: pb.WatchDecisionsRequest, context: grpc.ServicerContext) -> Iterator[pb.Decision]:
        identity = limited_caller()
        with contextlib.ExitStack() as held:
            if identity is not None:
                try:
                    held.enter_context(self.limits.watching(identity.key))
                except LimitError as error:
                    self._fail(context, "WatchDecisions", error)
            watcher = self._open_watch(request, context)
            try:
                for decision in self.guard.stream(watcher, context.is_active):
                    yield fill(pb.Decision(), decision)  # type: ignore[misc]
            except Exception as error:  # mapped like the unary calls: never UNKNOWN
                self._fail(context, "WatchDecisions", error)
            finally:
                self._watch_slots.release()
        if watcher.dropped:
            abort(context, code_pb2.RESOURCE_EXHAUSTED, "watcher fell too far behind; reconnect")

    @_mapped
    def _open_watch(self, request: pb.WatchDecisionsRequest, context: grpc.ServicerContext) -> Watcher:
        names = []
        for index, number in enumerate(request.actions):
            if number not in pb.Action.values() or number == pb.ACTION_UNSPECIFIED:
                raise InputError(f"actions[{index}]", f"{number} is not an Action")
            names.append(enum_word(pb.Action.DESCRIPTOR, number))
        if not self._watch_slots.acquire(blocking=False):
            raise TooManyWatchersError(
                f"{self.max_watchers} watch streams are open, the most this server allows; close one or retry"
            )
        try:
            return self.guard.watch(frozenset(request.test_ids), frozenset(names))
        except BaseException:  # no stream: its slot is free again
            self._watch_slots.release()
            raise


def _rollback(record: Rollback, now: float) -> pb.Rollback:
    message = pb.Rollback()
    fill(message, record.to_dict(now))
    return message


def _required(value: str, field: str, why: str) -> str:
    if not value.strip():
        raise InputError(field, f"required: {why}")
    return value


def _test_id(value: str) -> str:
    if not value.strip():
        raise InputError("test_id", "required: a non-empty string")
    return value


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A request deserializer that hands undecodable bytes to the handler instead of failing INTERNAL."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, ValueError, RuntimeError) as error:
            return Undecodable(error)

    return deserialize


_MAKERS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
}


def _handlers(
    servicer: RiskServicer, gate: Gate | None = None, peer_of: PeerOf = no_peer
) -> dict[str, grpc.RpcMethodHandler]:
    """The RiskService's method handlers, as the generated code builds them but with lenient decoding,
    each behind the gate when there is one."""
    handlers = {}
    for method in SERVICE.methods:
        request, reply = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        make = _MAKERS[(method.client_streaming, method.server_streaming)]
        behavior = getattr(servicer, method.name)
        if gate is not None:
            behavior = guarded(gate, method.name, behavior, method.server_streaming, peer_of)
        handlers[method.name] = make(
            behavior,
            request_deserializer=_lenient(request.FromString),
            response_serializer=reply.SerializeToString,
        )
    return handlers


def create_server(
    guard: Guard,
    address: str,
    workers: int = 16,
    log: Log | None = None,
    metrics: Metrics | None = None,
    reuse_port: bool = False,
    gate: Gate | None = None,
    tls: ServerTls | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A ready (not yet started) server bound to `address`; port 0 picks a free port. `reuse_port`: other
    processes (serve --processes) listen on the same port and the kernel spreads connections over them.
    `gate`: who may call what, and the limits (engine/security); without one every caller may do anything.
    `tls`: the port speaks TLS only (mTLS with a client CA), its certificate reloaded from disk."""
    limits = gate.limits if gate is not None else Limits(LimitSettings())
    size = limits.settings.request_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="abguard-rpc"),
        options=[
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_receive_message_length", size),  # a larger request is RESOURCE_EXHAUSTED, unread
        ],
        interceptors=[metrics.interceptor()] if metrics is not None else None,
    )
    # watch streams each hold a worker thread: a quarter of the pool at most, so Evaluate keeps flowing
    peer_of: PeerOf = no_peer
    if tls is not None:
        from ..security.tls import grpc_peer  # noqa: PLC0415  # cryptography only with TLS

        peer_of = grpc_peer
    handlers = _handlers(RiskServicer(guard, log, max(1, workers // 4), metrics, limits), gate, peer_of)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")

    def follow(serving: bool) -> None:  # health follows the guard: NOT_SERVING while the log cannot be written
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE.full_name):
            health_servicer.set(name, status)

    guard.on_serving(follow)
    return server, port, health_servicer
