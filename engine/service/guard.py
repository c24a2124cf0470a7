"""The service's domain: decide snapshots for many tests, keep the decision log, tell watchers.

Transport-free (the gRPC servicer is a thin layer over this). Calls for different tests run
in parallel; calls for one test are serialised by that test's lock. A decision's next state
is kept only after the log has accepted the decision, so memory never runs ahead of the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..contract import Decision, Snapshot, parse_snapshot, parse_time
from ..pipeline import Engine, TestState, step
from ..policy.model import Policy
from ..store import BadRecord, DecisionLog, Record
from .evidence import rollback_evidence
from .rebuild import rebuild_test
from .watchers import Watcher, Watchers


class UnknownTestError(LookupError):
    """No decision was ever recorded for this test."""

    def __init__(self, test_id: str) -> None:
        super().__init__(f"test_id: no test {test_id!r} (it has never been evaluated)")
        self.field = "test_id"


@dataclass(frozen=True)
class TestView:
    __test__ = False  # not a pytest class

    test_id: str
    test_status: str
    target_rollout_percent: float | None
    last_decision: dict[str, Any]
    rolled_back_at: str
    decisions: int


class Guard:
    def __init__(
        self,
        policy: Policy,
        log: DecisionLog,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.policy = policy
        self.engine = Engine.of(policy)
        self.log = log
        log.on_bad_record = self._unreadable  # rows the log cannot decode are reported as events
        self.clock = clock
        self.on_event = on_event
        self.states: dict[str, TestState] = {}
        self.watchers = Watchers()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # --- evaluating -------------------------------------------------------------------------
    def evaluate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The decision for one snapshot (JSON-shaped); the recorded one for a resent snapshot."""
        received = self.clock()
        snapshot = parse_snapshot(raw)
        with self._lock(snapshot.test_id):
            recorded = self.log.find(snapshot.test_id, snapshot.timestamp)
            if recorded is not None:
                return recorded.decision
            state = self.states.get(snapshot.test_id) or TestState.start(self.policy)
            decision, next_state = step(self.engine, state, snapshot)
            body = decision.to_dict()
            evidence = self._evidence(decision, snapshot, raw, received) if _rolled_back_now(decision) else None
            self.log.append(raw, body, snapshot.timestamp, received, evidence)
            self.states[snapshot.test_id] = next_state  # only now: the log has it
            self.watchers.publish(body)  # under the test's lock: watchers see a test's decisions in order
        return body

    def _evidence(self, decision: Decision, snapshot: Snapshot, raw: dict[str, Any], received: float) -> dict[str, Any]:
        history = self.log.page(decision.test_id, 200, None)
        lag = received - parse_time(decision.timestamp)
        return rollback_evidence(decision, snapshot, raw, [r.decision for r in history], lag)

    # --- reading ----------------------------------------------------------------------------
    def test(self, test_id: str) -> TestView:
        record = self.log.last(test_id)
        if record is None:
            raise UnknownTestError(test_id)
        restart = self.log.last_restart(test_id)
        restarted = restart is not None and restart.after_seq >= record.seq
        state = self.states.get(test_id)
        rolled_back_at = state.history.rolled_back_at if state and not restarted else None
        if restarted:
            test_status, target = "running", record.snapshot.get("rollout_percent")
        else:
            test_status, target = record.decision["test_status"], record.decision["target_rollout_percent"]
        return TestView(
            test_id=test_id,
            test_status=test_status,
            target_rollout_percent=target,
            last_decision=record.decision,
            rolled_back_at=rolled_back_at or "",
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
            self.states.pop(test_id, None)
        return at

    # --- watching ---------------------------------------------------------------------------
    def watch(self, test_ids: frozenset[str], actions: frozenset[str]) -> Watcher:
        return self.watchers.open(test_ids, actions)

    def stream(self, watcher: Watcher, alive: Callable[[], bool], poll: float = 0.5) -> Iterator[dict[str, Any]]:
        return self.watchers.stream(watcher, alive, poll)

    def end_watches(self) -> None:
        self.watchers.end_all()

    def close(self) -> None:
        self.end_watches()
        self.log.close()

    # --- restoring --------------------------------------------------------------------------
    def rebuild(self) -> int:
        """Every test's state from the log; the number of snapshots replayed."""
        replayed = 0
        for test_id in self.log.tests():
            with self._lock(test_id):
                rebuilt = rebuild_test(self.engine, self.log, test_id, self._skipped(test_id))
                if rebuilt.state is None:
                    self.states.pop(test_id, None)
                else:
                    self.states[test_id] = rebuilt.state
                replayed += rebuilt.replayed
        return replayed

    def _skipped(self, test_id: str) -> Callable[[int, str], None]:
        def report(seq: int, why: str) -> None:
            if self.on_event is not None:
                self.on_event({"event": "rebuild_skipped_record", "seq": seq, "test_id": test_id, "why": why})

        return report

    def _unreadable(self, record: BadRecord) -> None:
        if self.on_event is not None:
            self.on_event(
                {"event": "unreadable_record", "seq": record.seq, "test_id": record.test_id, "why": record.why}
            )

    def _lock(self, test_id: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(test_id)
            if lock is None:
                lock = self._locks[test_id] = threading.Lock()
            return lock


def _rolled_back_now(decision: Decision) -> bool:
    return decision.enforced and decision.action.rolls_back and decision.triggered_by != "rolled_back_test"
