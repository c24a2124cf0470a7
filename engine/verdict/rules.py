"""The policy's decision rules: which hold now, and the first that has held long enough."""

from __future__ import annotations

from collections.abc import Mapping

from ..contract import RiskLevel
from ..policy.model import DecisionRule, Policy


def rule_predicates(policy: Policy, critical: bool, score: float, level: RiskLevel) -> dict[str, bool]:
    """Whether each decision rule's instant test holds, before any `held_for`."""
    return {rule.name: _matches(rule, critical, score, level) for rule in policy.rules}


def _matches(rule: DecisionRule, critical: bool, score: float, level: RiskLevel) -> bool:
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
