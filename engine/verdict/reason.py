"""A decision's reason, in words a reviewer reads: the rule, the score, and the indicators behind it."""

from __future__ import annotations

from ..contract import ConditionResult, ConditionStatus
from ..policy.model import DecisionRule
from .numbers import duration

SHOWN = 4  # indicators spelled out; the rest are counted


def reason(
    rule: DecisionRule,
    conditions: list[ConditionResult],
    score: float,
    head_override: str | None,
    lowered_by: list[str],
) -> str:
    counting = [(c, i) for c in conditions for i in c.indicators if i.counting]
    counting.sort(key=lambda pair: (not pair[1].critical, -pair[1].severity))
    head = head_override or f"{rule.reason} (risk score {score:.2f})"
    if rule.action == "continue" and counting and head_override is None:
        head += "; watching"
    failed = [f"error in {c.name}: {c.error}" for c in conditions if c.status == ConditionStatus.ERROR]
    failed += [f"{c.name} inconclusive: {c.note}" for c in conditions if c.note]  # not too few samples: say why
    if not counting:
        inconclusive = [c.name for c in conditions if c.status == ConditionStatus.INCONCLUSIVE and not c.note]
        if inconclusive:
            head += f"; inconclusive, too few samples: {', '.join(inconclusive)}"
        return "; ".join([head, *failed])
    parts = []
    for _, indicator in counting[:SHOWN]:
        held = f" for {duration(indicator.held_seconds)}" if indicator.for_seconds else ""
        parts.append(f"{indicator.name}: {indicator.detail}{held}")
    if len(counting) > SHOWN:
        parts.append(f"and {len(counting) - SHOWN} more")
    parts += lowered_by
    parts += failed
    return head + ": " + "; ".join(parts)
