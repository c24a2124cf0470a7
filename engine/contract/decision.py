"""The decision contract: one declaration of every field a decision carries, and its closed words.

The gRPC messages (protos/engine/api/v1/risk.proto) mirror these dataclasses field for field;
a test holds the two equal, and engine/api/convert.py maps between them by name, so a field
is added here and in the proto, nowhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    """What the gateway should do, mildest first: the order is the contract."""

    CONTINUE = "continue"
    INCREASE_MONITORING = "increase_monitoring"
    REDUCE_ROLLOUT = "reduce_rollout"
    ROLLBACK = "rollback"
    IMMEDIATE_ROLLBACK = "immediate_rollback"

    @property
    def rank(self) -> int:
        return _ACTION_RANK[self]

    @property
    def rolls_back(self) -> bool:
        return self in (Action.ROLLBACK, Action.IMMEDIATE_ROLLBACK)


_ACTION_RANK = {action: rank for rank, action in enumerate(Action)}


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ConditionStatus(StrEnum):
    """A condition's outcome. Missing data (`inconclusive`) and a failure (`error`) are never `ok`."""

    OK = "ok"
    TRIGGERED = "triggered"
    CRITICAL = "critical"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class TestStatus(StrEnum):
    RUNNING = "running"
    REDUCED = "reduced"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_IN_PROGRESS = "rollback_in_progress"  # GetTest: rolled back, its phases not all complete


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


@dataclass(slots=True)
class ConditionResult:
    name: str
    status: ConditionStatus
    severity: float
    weight: float
    contribution: float
    samples: float
    min_samples: int
    indicators: list[IndicatorResult] = field(default_factory=list)
    error: str = ""  # what failed, when the status is `error`
    note: str = ""  # why it is `inconclusive` though it has samples (labels stopped arriving)


@dataclass(slots=True)
class NamedAction:
    name: str
    params: dict[str, Any]
    condition: str


@dataclass(frozen=True, slots=True)
class PolicyRef:
    name: str
    version: int
    digest: str


@dataclass(slots=True)
class Decision:
    decision_id: str
    test_id: str
    timestamp: str
    action: Action
    confidence: float
    reason: str
    triggered_by: str | None
    risk_score: float
    risk_level: RiskLevel
    conditions: list[ConditionResult]
    target_rollout_percent: float | None
    actions: list[NamedAction]
    enforced: bool
    policy: PolicyRef
    test_status: TestStatus
    # seconds each arm's labels lag behind this snapshot ({"champion": s, "challenger": s}); None without labels
    label_lag_seconds: dict[str, float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-shaped data (enums as their words), built without dataclasses.asdict's deep copies."""
        return _decision(self)


def _converter(cls: type, nested: dict[str, Callable[[Any], Any]]) -> Callable[[Any], dict[str, Any]]:
    """A dataclass's fields as a dict, with the nested values (enums, lists, records) converted."""
    names = tuple(f.name for f in fields(cls))
    steps = tuple(nested.items())

    def convert(value: Any) -> dict[str, Any]:
        out = {name: getattr(value, name) for name in names}
        for name, step in steps:
            if out[name] is not None:
                out[name] = step(out[name])
        return out

    return convert


def _word(member: StrEnum) -> str:
    return member.value


_indicator = _converter(IndicatorResult, {})
_condition = _converter(
    ConditionResult, {"status": _word, "indicators": lambda items: [_indicator(item) for item in items]}
)
_action = _converter(NamedAction, {"params": dict})
_decision = _converter(
    Decision,
    {
        "action": _word,
        "risk_level": _word,
        "test_status": _word,
        "conditions": lambda items: [_condition(item) for item in items],
        "actions": lambda items: [_action(item) for item in items],
        "policy": _converter(PolicyRef, {}),
    },
)


def decision_id(test_id: str, timestamp: str, digest: str) -> str:
    """Deterministic: the same snapshot under the same policy always has the same id."""
    return hashlib.sha256(f"{test_id}\x1f{timestamp}\x1f{digest}".encode()).hexdigest()[:32]
