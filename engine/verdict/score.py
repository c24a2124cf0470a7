"""The weighted risk score and the level band it falls in."""

from __future__ import annotations

import math

from ..contract import ConditionResult, RiskLevel
from ..policy.model import Policy
from .numbers import exact


def risk_score(conditions: list[ConditionResult]) -> float:
    """Sum of weight x severity over the conditions, capped at 1."""
    return exact(min(1.0, math.fsum(c.weight * c.severity for c in conditions)))


def risk_level(policy: Policy, score: float) -> RiskLevel:
    for level in policy.levels:
        if level.min <= score < level.max:
            return RiskLevel(level.name)
    return RiskLevel(policy.levels[-1].name)
