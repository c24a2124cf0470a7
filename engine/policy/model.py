"""The effective policy as typed, immutable values: what the compiler and the engine read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalog import FACTS
from .durations import parse_duration
from .expr import Compare, Expr, comparisons, parse
from .sequential import sequential_used


@dataclass(frozen=True)
class Indicator:
    condition: str
    name: str
    source: str
    expr: Expr
    severity: float
    for_seconds: float = 0.0
    critical: bool = False
    # what it asks for when it fires: None, its condition's actions; a tuple (maybe empty), these instead
    actions: tuple[NamedAction, ...] | None = None
    id: str = field(init=False, default="")  # condition.name, the rule's name in the ruleset
    leaves: tuple[Compare, ...] = field(init=False, default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.condition}.{self.name}")
        object.__setattr__(self, "leaves", tuple(comparisons(self.expr)))


@dataclass(frozen=True)
class NamedAction:
    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Condition:
    name: str
    weight: float
    window_seconds: float
    min_samples: int
    indicators: tuple[Indicator, ...]
    actions: tuple[NamedAction, ...]
    thresholds: dict[str, float]
    baseline_window_seconds: float | None = None
    sensitivity: str | None = None
    sensitivity_levels: dict[str, dict[str, float]] | None = None


@dataclass(frozen=True)
class Level:
    name: str
    min: float
    max: float


@dataclass(frozen=True)
class DecisionRule:
    name: str
    action: str
    confidence: float
    reason: str
    triggered_by: str | None = None
    critical: bool = False
    min_score: float | None = None
    level: str | None = None
    held_for_seconds: float | None = None
    params: dict[str, Any] | None = None


DEFAULT_FALSE_ALARMS_PER_TEST_DAY = 0.01
DEFAULT_BATCH_SECONDS = 30.0


@dataclass(frozen=True)
class Statistics:
    """The sequential statistics' promise: at most `false_alarms_per_test_day` alarms, expected,
    of all of them together on healthy arms, each judging batches of at least `batch_seconds`."""

    false_alarms_per_test_day: float = DEFAULT_FALSE_ALARMS_PER_TEST_DAY
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    sequential: tuple[str, ...] = ()  # stems of the sequential statistics the indicators use

    @property
    def batches_per_day(self) -> float:
        return 86_400.0 / self.batch_seconds


@dataclass(frozen=True)
class Policy:
    name: str
    version: int
    digest: str
    profile: str | None
    environment: str | None
    rollback_enabled: bool
    conditions: tuple[Condition, ...]
    levels: tuple[Level, ...]
    rules: tuple[DecisionRule, ...]
    notification_channels: tuple[str, ...] = ()
    statistics: Statistics = Statistics()

    @property
    def indicators(self) -> tuple[Indicator, ...]:
        return tuple(indicator for condition in self.conditions for indicator in condition.indicators)

    @property
    def ruleset_name(self) -> str:
        return f"{self.name}-v{self.version}-{self.digest.removeprefix('sha256:')[:12]}"


def build_policy(data: dict[str, Any], digest: str, profile: str | None, environment: str | None) -> Policy:
    """Typed view of data that validation has already accepted."""
    spec = data["spec"]
    conditions = tuple(_condition(name, body) for name, body in spec["conditions"].items())
    levels = tuple(Level(band["name"], float(band["min"]), float(band["max"])) for band in spec["levels"])
    rules = tuple(_rule(rule) for rule in spec["decision"]["rules"])
    return Policy(
        name=data["metadata"]["name"],
        version=int(data["metadata"]["version"]),
        digest=digest,
        profile=profile,
        environment=environment,
        rollback_enabled=bool(spec["rollback_enabled"]),
        conditions=conditions,
        levels=levels,
        rules=rules,
        notification_channels=tuple(spec.get("notification_channels", ())),
        statistics=_statistics(spec),
    )


def _statistics(spec: dict[str, Any]) -> Statistics:
    body = spec.get("statistics", {})
    return Statistics(
        false_alarms_per_test_day=float(body.get("false_alarms_per_test_day", DEFAULT_FALSE_ALARMS_PER_TEST_DAY)),
        batch_seconds=parse_duration(body["batch"]) if "batch" in body else DEFAULT_BATCH_SECONDS,
        sequential=tuple(statistic.stem for statistic in sequential_used(spec["conditions"])),
    )


def _condition(name: str, body: dict[str, Any]) -> Condition:
    thresholds = {key: float(value) for key, value in body.get("thresholds", {}).items()}
    indicators = tuple(
        Indicator(
            condition=name,
            name=item["name"],
            source=item["when"],
            expr=parse(item["when"], FACTS, thresholds),
            severity=float(item["severity"]),
            for_seconds=parse_duration(item["for"]) if "for" in item else 0.0,
            critical=bool(item.get("critical", False)),
            actions=_actions(item["actions"]) if "actions" in item else None,
        )
        for item in body["indicators"]
    )
    baseline = body.get("baseline_window")
    return Condition(
        name=name,
        weight=float(body["weight"]),
        window_seconds=parse_duration(body["window"]),
        min_samples=int(body["min_samples"]),
        indicators=indicators,
        actions=_actions(body.get("actions", ())),
        thresholds=thresholds,
        baseline_window_seconds=parse_duration(baseline) if baseline else None,
        sensitivity=body.get("sensitivity"),
        sensitivity_levels=body.get("sensitivity_levels"),
    )


def _rule(body: dict[str, Any]) -> DecisionRule:
    when = body.get("if", {})
    return DecisionRule(
        name=body["name"],
        action=body["action"],
        confidence=float(body["confidence"]),
        reason=body["reason"],
        triggered_by=body.get("triggered_by"),
        critical=bool(when.get("critical", False)),
        min_score=float(when["min_score"]) if "min_score" in when else None,
        level=when.get("level"),
        held_for_seconds=parse_duration(when["held_for"]) if "held_for" in when else None,
        params=body.get("params"),
    )


def _actions(items: Any) -> tuple[NamedAction, ...]:
    return tuple(NamedAction(a["name"], dict(a.get("params", {}))) for a in items)
