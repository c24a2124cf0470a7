"""The service's domain: decide snapshots for many tests, keep the decision log, tell watchers.

Transport-free (the gRPC servicer is a thin layer over this). Calls for different tests run
in parallel; calls for one test are serialised by that test's lock, so the log, the
windows and the duplicate check always agree.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .decision import ROLLBACKS, Decision, TestStatus
from .evaluator import Evaluator, OutOfOrderError
from .evidence import rollback_evidence
from .policy.model import Policy
from .snapshot import InputError, parse_snapshot, parse_time
from .store import DecisionLog, Record

WATCH_QUEUE = 1000  # decisions a slow watcher may fall behind before it is dropped


class UnknownTestError(LookupError):
    """No decision was ever recorded for this test."""

    def __init__(self, test_id: str) -> None:
        super().__init__(f"test_id: no test {test_id!r} (it has never been evaluated)")
        self.field = "test_id"


@dataclass
class Watcher:
    test_ids: frozenset[str]
    actions: frozenset[str]
    queue: queue.Queue[dict[str, Any] | None] = field(default_factory=lambda: queue.Queue(WATCH_QUEUE))
    dropped: bool = False

    def wants(self, decision: dict[str, Any]) -> bool:
        return (not self.test_ids or decision["test_id"] in self.test_ids) and (
            not self.actions or decision["action"] in self.actions
        )


@dataclass(frozen=True)
class TestView:
    test_id: str
    test_status: str
    target_rollout_percent: float | None
    last_decision: dict[str, Any]
    rolled_back_at: str
    decisions: int


class Guard:
    def __init__(self, policy: Policy, log: DecisionLog, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.log = log
        self.clock = clock
        self.evaluator = Evaluator(policy)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._watchers: list[Watcher] = []
        self._watchers_lock = threading.Lock()
        self.rebuilt = self._rebuild()

    # --- evaluating -------------------------------------------------------------------------
    def evaluate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The decision for one snapshot (JSON-shaped); the recorded one for a resent snapshot."""
        received = self.clock()
        snapshot = parse_snapshot(raw)
        with self._lock(snapshot.test_id):
            recorded = self.log.find(snapshot.test_id, snapshot.timestamp)
            if recorded is not None:
                return recorded.decision
            decision = self.evaluator.evaluate(snapshot)
            body = decision.to_dict()
            try:
                evidence = self._evidence(decision, raw, received) if self._rolled_back_now(decision) else None
                self.log.append(raw, body, snapshot.timestamp, received, evidence)
            except BaseException:
                self._reload(snapshot.test_id)  # memory must not run ahead of the log
                raise
            self._publish(body)  # under the test's lock: watchers see a test's decisions in order
        return body

    def _rolled_back_now(self, decision: Decision) -> bool:
        return decision.enforced and decision.action in ROLLBACKS and decision.triggered_by != "rolled_back_test"

    def _evidence(self, decision: Decision, raw: dict[str, Any], received: float) -> dict[str, Any]:
        history = self.log.page(decision.test_id, 200, None)
        lag = received - parse_time(decision.timestamp)
        return rollback_evidence(decision, raw, [r.decision for r in history], lag)

    # --- reading ----------------------------------------------------------------------------
    def test(self, test_id: str) -> TestView:
        record = self.log.last(test_id)
        if record is None:
            raise UnknownTestError(test_id)
        restart = self.log.last_restart(test_id)
        restarted = restart is not None and restart.after_seq >= record.seq
        state = self.evaluator.tests.get(test_id)
        status = state.status if state else TestStatus()
        if restarted:
            test_status, target = "running", record.snapshot.get("rollout_percent")
        else:
            test_status, target = record.decision["test_status"], record.decision["target_rollout_percent"]
        return TestView(
            test_id=test_id,
            test_status=test_status,
            target_rollout_percent=target,
            last_decision=record.decision,
            rolled_back_at=status.rolled_back_at or "",
            decisions=self.log.count(test_id),
        )

    def decisions(self, test_id: str, limit: int, before_seq: int | None) -> list[Record]:
        if self.log.last(test_id) is None:
            raise UnknownTestError(test_id)
        return self.log.page(test_id, limit, before_seq)

    def restart(self, test_id: str, reason: str) -> float:
        with self._lock(test_id):
            if self.log.last(test_id) is None:
                raise UnknownTestError(test_id)
            at = self.clock()
            self.log.restart(test_id, reason, at)
            self.evaluator.restart(test_id)
        return at

    # --- watching ---------------------------------------------------------------------------
    def watch(self, test_ids: frozenset[str], actions: frozenset[str]) -> Watcher:
        watcher = Watcher(test_ids, actions)
        with self._watchers_lock:
            self._watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._watchers_lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def stream(self, watcher: Watcher, alive: Callable[[], bool], poll: float = 0.5) -> Iterator[dict[str, Any]]:
        """Decisions for a watcher until `alive()` is false, the guard closes or it falls behind."""
        try:
            while alive() and not watcher.dropped:
                try:
                    item = watcher.queue.get(timeout=poll)
                except queue.Empty:
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.unwatch(watcher)

    def _publish(self, decision: dict[str, Any]) -> None:
        with self._watchers_lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            if watcher.wants(decision):
                try:
                    watcher.queue.put_nowait(decision)
                except queue.Full:
                    watcher.dropped = True

    def end_watches(self) -> None:
        """Tell every watcher its stream is over (first step of a shutdown)."""
        with self._watchers_lock:
            for watcher in self._watchers:
                try:
                    watcher.queue.put_nowait(None)
                except queue.Full:
                    watcher.dropped = True

    def close(self) -> None:
        self.end_watches()
        self.log.close()

    # --- restoring --------------------------------------------------------------------------
    def _rebuild(self) -> int:
        """Windows and status of every test from the log, so a restart of the service loses nothing.

        Snapshots since the test's last restart are replayed (only as far back as the longest
        window), then the status is taken from what was recorded: a test rolled back under an
        earlier policy stays rolled back.
        """
        horizon = max(max(c.window_seconds, c.baseline_window_seconds or 0.0) for c in self.policy.conditions)
        return sum(self._reload(test_id, horizon) for test_id in self.log.tests())

    def _reload(self, test_id: str, horizon: float | None = None) -> int:
        """One test's state from the log alone; the number of snapshots replayed."""
        if horizon is None:
            horizon = max(max(c.window_seconds, c.baseline_window_seconds or 0.0) for c in self.policy.conditions)
        self.evaluator.restart(test_id)
        last = self.log.last(test_id)
        restart = self.log.last_restart(test_id)
        if last is None or (restart is not None and restart.after_seq >= last.seq):
            return 0
        replayed = 0
        for record in self.log.since_restart(test_id, last.event_time - horizon - 1):
            try:
                self.evaluator.evaluate(parse_snapshot(record.snapshot))
                replayed += 1
            except (InputError, OutOfOrderError):
                continue
        state = self.evaluator.tests.get(test_id)
        if state is not None:
            state.status = _recorded_status(self.log.since_restart(test_id, 0.0))
        return replayed

    def _lock(self, test_id: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(test_id)
            if lock is None:
                lock = self._locks[test_id] = threading.Lock()
            return lock


def _recorded_status(records: list[Record]) -> TestStatus:
    status = TestStatus()
    for record in records:
        decision = record.decision
        if not decision["enforced"]:
            continue
        if decision["action"] in ROLLBACKS and status.rolled_back_at is None:
            status = replace(status, rolled_back_at=decision["timestamp"], rolled_back_by=decision["triggered_by"])
        elif decision["test_status"] == "reduced":
            status = replace(status, reduced=True)
    return status
