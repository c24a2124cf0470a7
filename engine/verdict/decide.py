"""The decision: the chosen rule's action, raised by what the conditions ask for, with its
traffic, status and reason. Pure: every input is an argument, the decision is a value."""

from __future__ import annotations

from collections.abc import Mapping

from ..contract import (
    Action,
    ConditionResult,
    ConditionStatus,
    Decision,
    NamedAction,
    PolicyRef,
    RiskLevel,
    decision_id,
)
from ..policy.model import DecisionRule, Policy
from ..policy.model import NamedAction as PolicyAction
from .numbers import exact
from .reason import reason
from .status import TestHistory, status_word
from .traffic import traffic

CONDITION_ACTION_CONFIDENCE = 0.75  # a condition's own traffic action raised the rule's action
CONDITION_ERROR_CONFIDENCE = 0.5  # a condition could not be judged: a person should look


def decide(
    policy: Policy,
    test_id: str,
    timestamp: str,
    rollout_percent: float | None,
    conditions: list[ConditionResult],
    rule: DecisionRule,
    score: float,
    level: RiskLevel,
    history: TestHistory,
    episodes: Mapping[str, float] | None = None,
    label_lag: Mapping[str, float] | None = None,
) -> tuple[Decision, dict[str, float]]:
    """The decision, and the traffic cuts in force (to pass back in as `episodes` next time)."""
    named = _named_actions(policy, conditions)
    action, confidence, triggered_by = Action(rule.action), rule.confidence, rule.triggered_by
    moved = traffic(rollout_percent, rule, named, episodes or {})
    head: str | None = None
    if moved.lowered_by and action.rank < Action.REDUCE_ROLLOUT.rank:
        action, confidence, triggered_by = Action.REDUCE_ROLLOUT, CONDITION_ACTION_CONFIDENCE, "condition_action"
        head = f"Condition actions lower the traffic (risk score {score:.2f})"
    failed = [c.name for c in conditions if c.status == ConditionStatus.ERROR]
    if failed and action.rank < Action.INCREASE_MONITORING.rank:
        action, confidence, triggered_by = Action.INCREASE_MONITORING, CONDITION_ERROR_CONFIDENCE, "condition_error"
        head = f"Conditions could not be judged: {', '.join(failed)} (risk score {score:.2f})"
    text = reason(rule, conditions, score, head, moved.lowered_by)
    target = moved.target
    if history.rolled_back_at is not None and policy.rollback_enabled:
        by = history.rolled_back_by or "rollback"
        text = f"test rolled back at {history.rolled_back_at} ({by}); restart it to resume. Now: {text}"
        action, confidence, triggered_by, target = Action.ROLLBACK, 1.0, "rolled_back_test", 0.0
    critical = any(c.status == ConditionStatus.CRITICAL for c in conditions)
    decision = Decision(
        decision_id=decision_id(test_id, timestamp, policy.digest),
        test_id=test_id,
        timestamp=timestamp,
        action=action,
        confidence=confidence,
        reason=text,
        triggered_by=triggered_by,
        risk_score=score,
        # a critical condition is critical risk whatever its weight: the level says so
        risk_level=RiskLevel.CRITICAL if critical else level,
        conditions=conditions,
        target_rollout_percent=None if target is None else exact(target),
        actions=named,
        enforced=policy.rollback_enabled,
        policy=PolicyRef(policy.name, policy.version, policy.digest),
        test_status=status_word(policy.rollback_enabled, action, target, rollout_percent, history),
        # both arms named (None: no labels yet), as the proto's optional fields read back
        label_lag_seconds={"champion": label_lag.get("champion"), "challenger": label_lag.get("challenger")}
        if label_lag
        else None,
    )
    return decision, moved.cuts


def _named_actions(policy: Policy, conditions: list[ConditionResult]) -> list[NamedAction]:
    """Actions of triggered conditions: critical first, then by contribution, then policy order.

    A fired indicator with actions of its own asks for those; the condition's actions are asked
    for when some counting indicator has none of its own (once, each action once per condition)."""
    by_name = {condition.name: condition for condition in policy.conditions}
    active = [c for c in conditions if c.status in (ConditionStatus.TRIGGERED, ConditionStatus.CRITICAL)]
    active.sort(key=lambda c: (c.status != ConditionStatus.CRITICAL, -c.contribution))
    out: list[NamedAction] = []
    for condition in active:
        policy_condition = by_name[condition.name]
        own = {indicator.id: indicator.actions for indicator in policy_condition.indicators}
        asked: list[PolicyAction] = []
        for fired in condition.indicators:
            if not fired.counting:
                continue
            actions = own.get(fired.name)
            for action in policy_condition.actions if actions is None else actions:
                if action not in asked:
                    asked.append(action)
        out += [NamedAction(action.name, dict(action.params), condition.name) for action in asked]
    return out
