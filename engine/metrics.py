"""Prometheus metrics of one service: what it decided, how fast, each test's latest decision,
the policy in force, and the gRPC server's calls by method and code.

No decision id or reason is ever a label (unbounded). The per-test gauges come from the decisions
this process made, kept in memory as they are made: a scrape reads no log and loads no test, so
it costs the same for 10 tests as for 10,000 idle ones. A test leaves them once it is finished
(rolled back with its rollback complete), and once this process has not decided it for
STALE_SECONDS (it stopped, or another replica decides it now: that replica's scrape has it).
After a restart a test reappears with its next decision. The registry is the service's own, so
two services in one process (tests) do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .contract import ConditionStatus
from .service import Guard

# Evaluate takes ~0.3-1 ms here; the buckets resolve sub-millisecond calls and reach 100 ms
EVALUATE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
STATUSES = tuple(status.value for status in ConditionStatus)
FINISHED = "rolled_back"  # with its rollback complete (rollback_in_progress stays)
STALE_SECONDS = 600.0  # a test this process has not decided for this long leaves its gauges (as idle tests memory)


class Metrics:
    def __init__(self, guard: Guard) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the scrape and nobody graphs them
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "abguard_decisions", "New decisions (resent snapshots answered from the log are not counted)",
            ["action", "triggered_by", "enforced"], registry=self.registry,
        )  # fmt: skip
        self.rollbacks = Counter(
            "abguard_rollbacks", "Rollbacks started, by trigger (manual_rollback for RollbackTest)",
            ["trigger"], registry=self.registry,
        )  # fmt: skip
        self.evaluate_seconds = Histogram(
            "abguard_evaluate_duration_seconds", "Evaluate calls, from request to answer, by transport",
            ["transport"], buckets=EVALUATE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.grpc_started = Counter(
            "grpc_server_started", "RPCs started on the server",
            ["grpc_type", "grpc_service", "grpc_method"], registry=self.registry,
        )  # fmt: skip
        self.grpc_handled = Counter(
            "grpc_server_handled", "RPCs completed on the server, by status code",
            ["grpc_type", "grpc_service", "grpc_method", "grpc_code"], registry=self.registry,
        )  # fmt: skip
        self.states_rejected = Counter(
            "abguard_state_rejected", "Stored states not used (failed their seal or a check) and rebuilt from the log,"
            " by where they were read (redis, checkpoint)", ["where"], registry=self.registry,
        )  # fmt: skip
        for where in ("redis", "checkpoint"):
            self.states_rejected.labels(where)  # at 0 from the start: an alert rule can watch increase()
        guard.on_rejected_state(lambda where: self.states_rejected.labels(where).inc())
        policy = guard.policy
        Info("abguard_policy", "The policy in force", registry=self.registry).info(
            {"name": policy.name, "version": str(policy.version), "digest": policy.digest}
        )
        self.tests = TestCollector(guard)
        self.registry.register(self.tests)
        guard.on_decision(self.decided)

    def decided(self, decision: dict[str, Any]) -> None:
        self.tests.decided(decision)
        triggered_by = decision.get("triggered_by") or ""
        enforced = "true" if decision.get("enforced") else "false"
        self.decisions.labels(decision["action"], triggered_by, enforced).inc()
        starts = decision["action"] in ("rollback", "immediate_rollback") and triggered_by != "rolled_back_test"
        if starts and decision.get("enforced"):
            self.rollbacks.labels(triggered_by or "rollback").inc()

    def manual_rollback(self) -> None:
        self.rollbacks.labels("manual_rollback").inc()

    def timed(self, transport: str) -> Callable[[float], None]:
        """Call the result with the call's start (perf_counter) when it is answered."""
        child = self.evaluate_seconds.labels(transport)
        return lambda started: child.observe(time.perf_counter() - started)

    def interceptor(self) -> grpc.ServerInterceptor:
        return _GrpcMetrics(self)


class _Latest(NamedTuple):
    risk_score: float
    target_ratio: float | None
    conditions: tuple[tuple[str, str], ...]  # (condition, status)
    test_status: str
    seen: float  # time.monotonic() of the decision
    label_lag: tuple[tuple[str, float], ...] = ()  # (arm, seconds its labels lag behind)


class TestCollector(Collector):
    """Per-test gauges from each test's latest decision in this process, kept as they are made."""

    __test__ = False  # not a pytest class

    def __init__(self, guard: Guard, stale_seconds: float = STALE_SECONDS) -> None:
        self.guard = guard
        self.stale_seconds = stale_seconds
        self._latest: dict[str, _Latest] = {}

    def decided(self, decision: dict[str, Any]) -> None:
        target = decision.get("target_rollout_percent")
        conditions = tuple((str(c["name"]), str(c["status"])) for c in decision.get("conditions") or [])
        lags = decision.get("label_lag_seconds") or {}
        self._latest[decision["test_id"]] = _Latest(
            float(decision.get("risk_score") or 0.0),
            None if target is None else float(target) / 100,
            conditions,
            str(decision.get("test_status", "")),
            time.monotonic(),
            tuple((str(arm), float(lag)) for arm, lag in lags.items() if lag is not None),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        risk = GaugeMetricFamily("abguard_risk_score", "The latest decision's risk score", labels=["test_id"])
        target = GaugeMetricFamily(
            "abguard_target_rollout_ratio", "The challenger's target share of traffic, 0..1", labels=["test_id"]
        )
        status = GaugeMetricFamily(
            "abguard_condition_status", "1 for each condition's status in the latest decision",
            labels=["test_id", "condition", "status"],
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "abguard_label_lag_seconds", "How far each arm's labels lag behind the latest snapshot",
            labels=["test_id", "arm"],
        )  # fmt: skip
        for test_id, latest in self._current():
            risk.add_metric([test_id], latest.risk_score)
            if latest.target_ratio is not None:
                target.add_metric([test_id], latest.target_ratio)
            for condition, now in latest.conditions:
                for word in STATUSES:
                    status.add_metric([test_id, condition, word], 1.0 if now == word else 0.0)
            for arm, seconds in latest.label_lag:
                lag.add_metric([test_id, arm], seconds)
        yield risk
        yield target
        yield status
        yield lag

    def _current(self) -> Iterator[tuple[str, _Latest]]:
        now = time.monotonic()
        for test_id, latest in list(self._latest.items()):
            if now - latest.seen > self.stale_seconds:
                if self._latest.get(test_id) is latest:
                    del self._latest[test_id]
                continue
            if latest.test_status == FINISHED and not self._in_progress(test_id):
                continue
            yield test_id, latest

    def _in_progress(self, test_id: str) -> bool:
        try:
            return self.guard.rollback_in_progress(test_id)
        except Exception:  # the store cannot be read this scrape: say nothing of the test rather than fail
            return False


class _GrpcMetrics(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """grpc_server_started_total / grpc_server_handled_total, as go-grpc-prometheus names them.

    Each method's counting handler is made once and kept: intercept_service runs on every call."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._handlers: dict[str, Any] = {}

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        counted = self._handlers.get(details.method)
        if counted is None:
            handler = continuation(details)
            if handler is None:
                return None
            counted = self._handlers.setdefault(details.method, self._counting(details.method, handler))
        return counted

    def _counting(self, path: str, handler: Any) -> Any:
        service, _, method = path.lstrip("/").rpartition("/")
        metrics = self.metrics

        @contextmanager
        def counted(kind: str, context: grpc.ServicerContext) -> Iterator[None]:
            metrics.grpc_started.labels(kind, service, method).inc()
            code = "OK"
            try:
                yield
            except Exception:
                code = "UNKNOWN"  # unless abort set the code, which _code reads
                raise
            finally:
                metrics.grpc_handled.labels(kind, service, method, _code(context, code)).inc()

        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary_call = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                with counted("unary", context):
                    return unary_call(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, **serializers)
        if handler.unary_stream is not None:
            stream_call = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with counted("server_stream", context):
                    yield from stream_call(request, context)

            return grpc.unary_stream_rpc_method_handler(stream, **serializers)
        return handler


def _code(context: grpc.ServicerContext, default: str) -> str:
    """The status the call ends with: what abort set, else `default`."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return default
