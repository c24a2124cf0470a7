"""One evaluation as a pure step: (test state, snapshot) -> (decision, next state).

    snapshot -> windows.add -> facts -> durable_rules -> held durations
             -> condition results -> score, level -> decision rule -> decision

The current state is never changed: the caller keeps the next state only once it has
what it needs (the service: the decision appended to the log), so memory can never run
ahead of the log. Time is the snapshot's (event time): the same inputs give the same
decisions. `Evaluator` is the in-memory driver for many tests (replay, policy tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .compiled import register_pickling
from .contract import Decision, OutOfOrderError, Snapshot, format_time
from .facts import TestWindows
from .policy.model import Policy
from .rules.answers import Answers
from .rules.durable_adapter import CompiledRuleset
from .rules.registry import register
from .verdict import (
    TestHistory,
    choose_rule,
    condition_results,
    decide,
    risk_level,
    risk_score,
    rule_predicates,
)

REMEMBERED_DECISIONS = 8  # recent decisions kept per test to answer resent snapshots
GAP_FACTOR = 2.0  # a silence longer than this many intervals breaks every `for` streak


@dataclass(frozen=True, slots=True)
class TestState:
    """Everything one test remembers between snapshots; a value, never changed in place."""

    windows: TestWindows
    last_time: float | None = None
    last_interval: float = 30.0
    indicator_since: Mapping[str, float] = field(default_factory=dict)
    rule_since: Mapping[str, float] = field(default_factory=dict)
    history: TestHistory = TestHistory()  # noqa: RUF009  # frozen: sharing the default is safe
    recent: tuple[tuple[float, Decision], ...] = ()  # the last Engine.remembered, oldest first
    cuts: Mapping[str, float] = field(default_factory=dict)  # traffic cuts in force, by source

    @classmethod
    def start(cls, policy: Policy) -> TestState:
        return cls(TestWindows.start(policy))

    def remembered(self, t: float) -> Decision | None:
        for time, decision in self.recent:
            if time == t:
                return decision
        return None


@dataclass(frozen=True, slots=True)
class Engine:
    """An effective policy and its registered ruleset: what a step needs besides the state."""

    policy: Policy
    ruleset: CompiledRuleset
    asked: frozenset[str]  # the facts some indicator compares: all the ruleset can see
    answers: Answers  # the ruleset's answers by the outcome of every comparison (rules/answers.py)
    # decisions each test keeps to answer a resent snapshot; the service keeps none (its log answers)
    remembered: int = REMEMBERED_DECISIONS

    @classmethod
    def of(
        cls, policy: Policy, ruleset: CompiledRuleset | None = None, remembered: int = REMEMBERED_DECISIONS
    ) -> Engine:
        ruleset = ruleset or register(policy)
        asked = asked_facts(policy)
        leaves = [leaf for indicator in policy.indicators for leaf in indicator.leaves]
        return cls(policy, ruleset, asked, Answers(ruleset, leaves, asked), remembered)


def asked_facts(policy: Policy) -> frozenset[str]:
    """Only these facts go to the rule engine: a fact no rule names cannot change what fires,
    and every fact sent costs JSON encoding and matching."""
    leaves = (leaf for indicator in policy.indicators for leaf in indicator.leaves)
    return frozenset(name for leaf in leaves for name in (leaf.fact, leaf.other) if name is not None)


def step(engine: Engine, state: TestState, snapshot: Snapshot) -> tuple[Decision, TestState]:
    """The decision for a snapshot and the state after it; `state` is left as it was.

    A resent snapshot (a timestamp among the recent ones) gets the decision already made
    and the same state; an older one raises OutOfOrderError.
    """
    t = snapshot.timestamp
    remembered = state.remembered(t)
    if remembered is not None:
        return remembered, state
    if state.last_time is not None and t < state.last_time:
        raise OutOfOrderError(snapshot.test_id, snapshot.time_text, format_time(state.last_time))
    policy = engine.policy
    gap = GAP_FACTOR * max(snapshot.interval_seconds, state.last_interval)
    continuous = state.last_time is not None and t - state.last_time <= gap

    windows = state.windows.add(snapshot)
    derived = windows.read(snapshot, policy)
    facts = derived.facts
    fired = set(engine.answers.fire(facts))
    indicator_since = _advance(state.indicator_since, fired, t, continuous)
    held = {key: t - start for key, start in indicator_since.items()}

    conditions = condition_results(policy, derived, fired, held)
    score = risk_score(conditions)
    level = risk_level(policy, score)
    critical = any(c.status == "critical" for c in conditions)
    predicates = rule_predicates(policy, critical, score, level)
    rule_since = _advance(state.rule_since, [k for k, v in predicates.items() if v], t, continuous)
    rule = choose_rule(policy, predicates, {key: t - start for key, start in rule_since.items()})

    decision, cuts = decide(
        policy, snapshot.test_id, snapshot.time_text, snapshot.rollout_percent,
        conditions, rule, score, level, state.history, state.cuts, derived.label_lag,
    )  # fmt: skip
    history = state.history.after(
        decision.action, decision.enforced, decision.test_status, decision.timestamp, decision.triggered_by
    )
    recent = (*state.recent, (t, decision))[-engine.remembered :] if engine.remembered else ()
    return decision, TestState(
        windows, t, snapshot.interval_seconds, indicator_since, rule_since, history, recent, cuts
    )


def _advance(since: Mapping[str, float], active: Iterable[str], t: float, continuous: bool) -> dict[str, float]:
    """Start times of what is active now: kept while it stays active without a gap, else now."""
    return {key: since[key] if continuous and key in since else t for key in active}


class Evaluator:
    """Decisions for any number of tests under one effective policy, held in memory."""

    def __init__(self, policy: Policy, ruleset: CompiledRuleset | None = None) -> None:
        self.engine = Engine.of(policy, ruleset)
        self.tests: dict[str, TestState] = {}

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    def state(self, test_id: str) -> TestState:
        return self.tests.get(test_id) or TestState.start(self.engine.policy)

    def evaluate(self, snapshot: Snapshot) -> Decision:
        decision, self.tests[snapshot.test_id] = step(self.engine, self.state(snapshot.test_id), snapshot)
        return decision

    def restart(self, test_id: str) -> None:
        """Forget a test entirely: a rolled-back test starts again with empty windows."""
        self.tests.pop(test_id, None)


register_pickling()  # the whole core is imported by now
