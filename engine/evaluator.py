"""The evaluation pipeline for many tests under one policy: snapshot in, decision out.

    snapshot -> per-test windows -> derived facts -> durable_rules -> held durations
             -> condition results -> score, level -> decision rule -> decision

Time is the snapshot's (event time): replaying the same input gives the same decisions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .decision import (
    ROLLBACKS,
    Decision,
    TestStatus,
    choose_rule,
    condition_results,
    decide,
    risk_level,
    risk_score,
    rule_predicates,
)
from .derive import TestMetrics
from .policy.model import Policy
from .rules.durable_adapter import CompiledRuleset
from .rules.registry import register
from .snapshot import Snapshot, format_time

REMEMBERED_DECISIONS = 8  # recent decisions kept per test to answer resent snapshots
GAP_FACTOR = 2.0  # a silence longer than this many intervals breaks every `for` streak


class OutOfOrderError(ValueError):
    """A snapshot older than the test's last one: windows only move forward."""

    def __init__(self, test_id: str, timestamp: str, last: str) -> None:
        super().__init__(f"timestamp: {timestamp} is older than test {test_id!r}'s last snapshot at {last}")
        self.field = "timestamp"
        self.test_id = test_id


@dataclass
class TestState:
    metrics: TestMetrics
    last_time: float | None = None
    last_interval: float = 30.0
    indicator_since: dict[str, float] = field(default_factory=dict)
    rule_since: dict[str, float] = field(default_factory=dict)
    status: TestStatus = field(default_factory=TestStatus)
    recent: OrderedDict[float, Decision] = field(default_factory=OrderedDict)
    cuts: dict[str, float] = field(default_factory=dict)  # traffic cuts in force, by source


def advance(since: Mapping[str, float], active: Iterable[str], t: float, continuous: bool) -> dict[str, float]:
    """Start times of what is active now: kept while it stays active without a gap, else now."""
    return {key: since[key] if continuous and key in since else t for key in active}


class Evaluator:
    """Decisions for any number of tests under one effective policy. Not thread safe per test."""

    def __init__(self, policy: Policy, ruleset: CompiledRuleset | None = None) -> None:
        self.policy = policy
        self.ruleset = ruleset or register(policy)
        self.tests: dict[str, TestState] = {}

    def state(self, test_id: str) -> TestState:
        state = self.tests.get(test_id)
        if state is None:
            state = self.tests[test_id] = TestState(TestMetrics(self.policy))
        return state

    def evaluate(self, snapshot: Snapshot) -> Decision:
        state = self.state(snapshot.test_id)
        t, time_text = snapshot.timestamp, snapshot.time_text  # everything that can fail, before any change
        remembered = state.recent.get(t)
        if remembered is not None:
            return remembered
        if state.last_time is not None and t < state.last_time:
            raise OutOfOrderError(snapshot.test_id, time_text, format_time(state.last_time))
        gap = GAP_FACTOR * max(snapshot.interval_seconds, state.last_interval)
        continuous = state.last_time is not None and t - state.last_time <= gap

        state.metrics.add(snapshot)
        derived = state.metrics.derive(snapshot)
        fired = set(self.ruleset.fire(derived.facts))
        state.indicator_since = advance(state.indicator_since, fired, t, continuous)
        held = {key: t - start for key, start in state.indicator_since.items()}

        conditions = condition_results(self.policy, derived.facts, derived.samples, derived.conclusive, fired, held)
        score = risk_score(conditions)
        level = risk_level(self.policy, score)
        critical = any(c.status == "critical" for c in conditions)
        predicates = rule_predicates(self.policy, critical, score, level)
        state.rule_since = advance(state.rule_since, [k for k, v in predicates.items() if v], t, continuous)
        rule_held = {key: t - start for key, start in state.rule_since.items()}
        rule = choose_rule(self.policy, predicates, rule_held)

        decision, state.cuts = decide(
            self.policy,
            snapshot.test_id,
            time_text,
            snapshot.rollout_percent,
            conditions,
            rule,
            score,
            level,
            state.status,
            state.cuts,
        )
        state.status = _next_status(state.status, decision)
        state.last_time, state.last_interval = t, snapshot.interval_seconds
        state.recent[t] = decision
        while len(state.recent) > REMEMBERED_DECISIONS:
            state.recent.popitem(last=False)
        return decision

    def restart(self, test_id: str) -> None:
        """Forget a test entirely: a rolled-back test starts again with empty windows."""
        self.tests.pop(test_id, None)


def _next_status(status: TestStatus, decision: Decision) -> TestStatus:
    if not decision.enforced or status.rolled_back_at is not None:
        return status
    if decision.action in ROLLBACKS:
        return replace(status, rolled_back_at=decision.timestamp, rolled_back_by=decision.triggered_by)
    if decision.test_status == "reduced":
        return replace(status, reduced=True)
    return status
