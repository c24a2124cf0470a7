"""From fired indicators to a decision: condition status, score, level, action, target, reason.

Pure: every input is an argument (the facts, what fired, how long each thing has held,
the test's status) and the decision is a value. Event-time bookkeeping lives in the caller.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .policy.catalog import DECISION_ACTIONS
from .policy.expr import Compare, evaluate
from .policy.model import Condition, DecisionRule, Indicator, Policy

ORDER = {action: rank for rank, action in enumerate(DECISION_ACTIONS)}
ROLLBACKS = ("rollback", "immediate_rollback")
CONDITION_ACTION_CONFIDENCE = 0.75


@dataclass(slots=True)  # built per evaluation: slots, not frozen, is 5x cheaper
class IndicatorResult:
    name: str
    severity: float
    critical: bool
    counting: bool  # fired and held for its `for` duration
    held_seconds: float
    for_seconds: float
    observed: float | None
    threshold: float | None
    detail: str


@dataclass(slots=True)  # built per evaluation: slots, not frozen, is 5x cheaper
class ConditionResult:
    name: str
    status: str  # ok, triggered, critical, inconclusive
    severity: float
    weight: float
    contribution: float
    samples: float
    min_samples: int
    indicators: list[IndicatorResult] = field(default_factory=list)


@dataclass(slots=True)  # built per evaluation: slots, not frozen, is 5x cheaper
class NamedAction:
    name: str
    params: dict[str, Any]
    condition: str


@dataclass(slots=True)  # built per evaluation: slots, not frozen, is 5x cheaper
class Decision:
    decision_id: str
    test_id: str
    timestamp: str
    action: str
    confidence: float
    reason: str
    triggered_by: str | None
    risk_score: float
    risk_level: str
    conditions: list[ConditionResult]
    target_rollout_percent: float | None
    actions: list[NamedAction]
    enforced: bool
    policy: dict[str, Any]
    test_status: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON; written out by hand because dataclasses.asdict deep-copies (slow)."""
        data = {name: getattr(self, name) for name in _DECISION_FIELDS}
        data["conditions"] = [_condition_dict(c) for c in self.conditions]
        data["actions"] = [{"name": a.name, "params": dict(a.params), "condition": a.condition} for a in self.actions]
        data["policy"] = dict(self.policy)
        return data


_DECISION_FIELDS = tuple(f.name for f in fields(Decision))
_CONDITION_FIELDS = tuple(f.name for f in fields(ConditionResult))
_INDICATOR_FIELDS = tuple(f.name for f in fields(IndicatorResult))


def _condition_dict(condition: ConditionResult) -> dict[str, Any]:
    data = {name: getattr(condition, name) for name in _CONDITION_FIELDS}
    data["indicators"] = [{name: getattr(i, name) for name in _INDICATOR_FIELDS} for i in condition.indicators]
    return data


@dataclass(frozen=True)
class TestStatus:
    """What the test's history says before this decision."""

    rolled_back_at: str | None = None
    rolled_back_by: str | None = None
    reduced: bool = False


def decision_id(test_id: str, timestamp: str, digest: str) -> str:
    """Deterministic: the same snapshot under the same policy always has the same id."""
    return hashlib.sha256(f"{test_id}\x1f{timestamp}\x1f{digest}".encode()).hexdigest()[:32]


def condition_results(
    policy: Policy,
    facts: Mapping[str, float],
    samples: Mapping[str, float],
    conclusive: Mapping[str, bool],
    fired: set[str],
    held: Mapping[str, float],
) -> list[ConditionResult]:
    results = []
    for condition in policy.conditions:
        indicators = [
            _indicator(indicator, facts, held.get(indicator.id, 0.0))
            for indicator in condition.indicators
            if indicator.id in fired
        ]
        results.append(_condition(condition, indicators, samples.get(condition.name, 0.0), conclusive[condition.name]))
    return results


def _condition(
    condition: Condition, indicators: list[IndicatorResult], samples: float, conclusive: bool
) -> ConditionResult:
    counting = [i for i in indicators if i.counting]
    severity = max((i.severity for i in counting), default=0.0)
    if not conclusive:
        status = "inconclusive"
    elif any(i.critical for i in counting):
        status = "critical"
    elif counting:
        status = "triggered"
    else:
        status = "ok"
    return ConditionResult(
        name=condition.name,
        status=status,
        severity=severity,
        weight=condition.weight,
        contribution=_round(condition.weight * severity),
        samples=samples,
        min_samples=condition.min_samples,
        indicators=indicators,
    )


def _indicator(indicator: Indicator, facts: Mapping[str, float], held: float) -> IndicatorResult:
    true_leaves = [leaf for leaf in indicator.leaves if evaluate(leaf, facts)]
    first = true_leaves[0] if true_leaves else None
    return IndicatorResult(
        name=indicator.id,
        severity=indicator.severity,
        critical=indicator.critical,
        counting=held >= indicator.for_seconds,
        held_seconds=held,
        for_seconds=indicator.for_seconds,
        observed=facts.get(first.fact) if first else None,
        threshold=_bound(first, facts) if first else None,
        detail=" and ".join(_describe(leaf, facts) for leaf in true_leaves),
    )


def _bound(leaf: Compare, facts: Mapping[str, float]) -> float | None:
    if leaf.other is None:
        return leaf.value
    other = facts.get(leaf.other)
    return other * leaf.factor if other is not None else None


def _describe(leaf: Compare, facts: Mapping[str, float]) -> str:
    bound = _bound(leaf, facts)
    text = f"{leaf.fact} {_num(facts.get(leaf.fact))} {leaf.op} {_num(bound)}"
    if leaf.other is not None:
        text += f" ({leaf.other} x {_num(leaf.factor)})"
    return text


def risk_score(conditions: list[ConditionResult]) -> float:
    return _round(min(1.0, math.fsum(c.weight * c.severity for c in conditions)))


def risk_level(policy: Policy, score: float) -> str:
    for level in policy.levels:
        if level.min <= score < level.max:
            return level.name
    return policy.levels[-1].name


def rule_predicates(policy: Policy, critical: bool, score: float, level: str) -> dict[str, bool]:
    """Whether each decision rule's instant test holds, before any `held_for`."""
    return {rule.name: _matches(rule, critical, score, level) for rule in policy.rules}


def _matches(rule: DecisionRule, critical: bool, score: float, level: str) -> bool:
    if rule.critical and not critical:
        return False
    if rule.min_score is not None and score < rule.min_score:
        return False
    return not (rule.level is not None and level != rule.level)


def choose_rule(policy: Policy, predicates: Mapping[str, bool], held: Mapping[str, float]) -> DecisionRule:
    """First rule whose test holds (and has held for longer than its `held_for`)."""
    for rule in policy.rules:
        if not predicates[rule.name]:
            continue
        if rule.held_for_seconds is not None and held.get(rule.name, 0.0) <= rule.held_for_seconds:
            continue
        return rule
    return policy.rules[-1]


def decide(
    policy: Policy,
    test_id: str,
    timestamp: str,
    rollout_percent: float | None,
    conditions: list[ConditionResult],
    rule: DecisionRule,
    score: float,
    level: str,
    status: TestStatus,
    episodes: Mapping[str, float] | None = None,
) -> tuple[Decision, dict[str, float]]:
    """The decision, and the traffic cuts in force (to pass back in as `episodes` next time).

    A relative cut (`reduce_rollout {factor}`) applies once per episode: the target it
    sets when its condition or rule starts to hold stays until that stops holding, so a
    gateway that applied it is not cut again on every snapshot.
    """
    named = _named_actions(policy, conditions)
    action, confidence, triggered_by = rule.action, rule.confidence, rule.triggered_by
    cuts = _cuts(rollout_percent, rule, named, episodes or {})
    target = 0.0 if rule.action in ROLLBACKS else rollout_percent
    lowered_by: list[str] = []
    for key, (value, why) in cuts.items():
        if target is None or value < target:
            target = value
        if not key.startswith("rule:") and (rollout_percent is None or value < rollout_percent):
            lowered_by.append(why)
    if lowered_by and ORDER[action] < ORDER["reduce_rollout"]:
        action, confidence, triggered_by = "reduce_rollout", CONDITION_ACTION_CONFIDENCE, "condition_action"
    reason = _reason(rule, conditions, score, action != rule.action, lowered_by)
    if status.rolled_back_at is not None and policy.rollback_enabled:
        by = status.rolled_back_by or "rollback"
        reason = f"test rolled back at {status.rolled_back_at} ({by}); restart it to resume. Now: {reason}"
        action, confidence, triggered_by, target = "rollback", 1.0, "rolled_back_test", 0.0
    decision = Decision(
        decision_id=decision_id(test_id, timestamp, policy.digest),
        test_id=test_id,
        timestamp=timestamp,
        action=action,
        confidence=confidence,
        reason=reason,
        triggered_by=triggered_by,
        risk_score=score,
        risk_level=level,
        conditions=conditions,
        target_rollout_percent=None if target is None else _round(target),
        actions=named,
        enforced=policy.rollback_enabled,
        policy={"name": policy.name, "version": policy.version, "digest": policy.digest},
        test_status=_status(policy, action, target, rollout_percent, status),
    )
    return decision, {key: value for key, (value, _) in cuts.items()}


def _cuts(
    current: float | None, rule: DecisionRule, named: list[NamedAction], episodes: Mapping[str, float]
) -> dict[str, tuple[float, str]]:
    """Traffic targets asked for now, by source, with the words that explain each."""
    cuts: dict[str, tuple[float, str]] = {}
    factor = (rule.params or {}).get("factor")
    if rule.action == "reduce_rollout" and isinstance(factor, int | float) and current is not None:
        key = f"rule:{rule.name}"
        cuts[key] = (episodes.get(key, current * factor), f"rule {rule.name} reduces by factor {factor}")
    for item in named:
        key = f"{item.condition}:{item.name}"
        if item.name == "set_rollout":
            percent = float(item.params["percent"])
            cuts[key] = (percent, f"{item.condition} asks for set_rollout to {percent:g}%")
        elif item.name == "reduce_rollout" and current is not None:
            factor = float(item.params["factor"])
            value = episodes.get(key, current * factor)
            cuts[key] = (value, f"{item.condition} asks for reduce_rollout by factor {factor:g} (to {value:g}%)")
    return cuts


def _named_actions(policy: Policy, conditions: list[ConditionResult]) -> list[NamedAction]:
    """Actions of triggered conditions: critical first, then by contribution, then policy order."""
    by_name = {condition.name: condition for condition in policy.conditions}
    active = [c for c in conditions if c.status in ("triggered", "critical")]
    active.sort(key=lambda c: (c.status != "critical", -c.contribution))
    return [
        NamedAction(action.name, dict(action.params), condition.name)
        for condition in active
        for action in by_name[condition.name].actions
    ]


def _status(policy: Policy, action: str, target: float | None, current: float | None, status: TestStatus) -> str:
    if not policy.rollback_enabled:
        return "running"
    if action in ROLLBACKS:
        return "rolled_back"
    lowered = target is not None and current is not None and target < current
    return "reduced" if status.reduced or lowered else "running"


def _reason(
    rule: DecisionRule, conditions: list[ConditionResult], score: float, upgraded: bool, lowered_by: list[str]
) -> str:
    counting = [
        (condition, indicator) for condition in conditions for indicator in condition.indicators if indicator.counting
    ]
    counting.sort(key=lambda pair: (not pair[1].critical, -pair[1].severity))
    head = f"{rule.reason} (risk score {score:.2f})"
    if upgraded:
        head = f"Condition actions lower the traffic (risk score {score:.2f})"
    if rule.action == "continue" and counting and not upgraded:
        head += "; watching"
    if not counting:
        inconclusive = [c.name for c in conditions if c.status == "inconclusive"]
        if inconclusive:
            head += f"; inconclusive, too few samples: {', '.join(inconclusive)}"
        return head
    parts = []
    for _, indicator in counting[:4]:
        held = f" for {_duration(indicator.held_seconds)}" if indicator.for_seconds else ""
        parts.append(f"{indicator.name}: {indicator.detail}{held}")
    if len(counting) > 4:
        parts.append(f"and {len(counting) - 4} more")
    parts += lowered_by
    return head + ": " + "; ".join(parts) if parts else head


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _duration(seconds: float) -> str:
    """90 -> '1m30s', 120 -> '2m', 45 -> '45s'."""
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{rest}s"
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _round(value: float) -> float:
    return round(value, 6)
