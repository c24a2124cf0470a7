"""Each condition's outcome from its facts, the indicators that fired and how long each has held."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..contract import ConditionResult, ConditionStatus, IndicatorResult
from ..facts import Derived
from ..policy.expr import Compare, evaluate
from ..policy.model import Condition, Indicator, Policy
from .numbers import exact, short


def condition_results(
    policy: Policy, derived: Derived, fired: set[str], held: Mapping[str, float]
) -> list[ConditionResult]:
    results = []
    for condition in policy.conditions:
        indicators = [
            _indicator(indicator, derived.facts, derived.notes, held.get(indicator.id, 0.0))
            for indicator in condition.indicators
            if indicator.id in fired
        ]
        results.append(_condition(condition, indicators, derived))
    return results


def _condition(condition: Condition, indicators: list[IndicatorResult], derived: Derived) -> ConditionResult:
    counting = [i for i in indicators if i.counting]
    severity = max((i.severity for i in counting), default=0.0)
    error = derived.errors.get(condition.name, "")
    if error:
        status, severity, indicators = ConditionStatus.ERROR, 0.0, []
    elif not derived.conclusive[condition.name]:
        status = ConditionStatus.INCONCLUSIVE
    elif any(i.critical for i in counting):
        status = ConditionStatus.CRITICAL
    elif counting:
        status = ConditionStatus.TRIGGERED
    else:
        status = ConditionStatus.OK
    return ConditionResult(
        name=condition.name,
        status=status,
        severity=severity,
        weight=condition.weight,
        contribution=exact(condition.weight * severity),
        samples=derived.samples.get(condition.name, 0.0),
        min_samples=condition.min_samples,
        indicators=indicators,
        error=error,
        note=derived.inconclusive.get(condition.name, "") if status == ConditionStatus.INCONCLUSIVE else "",
    )


def _indicator(
    indicator: Indicator, facts: Mapping[str, float], notes: Mapping[str, Callable[[], str]], held: float
) -> IndicatorResult:
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
        detail=" and ".join(_describe(leaf, facts, notes) for leaf in true_leaves),
    )


def _bound(leaf: Compare, facts: Mapping[str, float]) -> float | None:
    if leaf.other is None:
        return leaf.value
    other = facts.get(leaf.other)
    return other * leaf.factor if other is not None else None


def _describe(leaf: Compare, facts: Mapping[str, float], notes: Mapping[str, Callable[[], str]]) -> str:
    bound = _bound(leaf, facts)
    text = f"{leaf.fact} {short(facts.get(leaf.fact))} {leaf.op} {short(bound)}"
    if leaf.other is not None:
        text += f" ({leaf.other} x {short(leaf.factor)})"
    if leaf.fact in notes:  # a sequential statistic: which boundary it crossed, its estimate and interval
        text += f": {notes[leaf.fact]()}"
    return text
