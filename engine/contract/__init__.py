"""The input and output contracts: snapshots in, decisions out, the words both use, and times."""

from __future__ import annotations

from .decision import (
    Action,
    ConditionResult,
    ConditionStatus,
    Decision,
    IndicatorResult,
    NamedAction,
    PolicyRef,
    RiskLevel,
    TestStatus,
    decision_id,
)
from .errors import InputError, OutOfOrderError, Violation, excerpt
from .snapshot import (
    CACHE_TIERS,
    CONFIDENCE_BINS,
    ERROR_CATEGORIES,
    Arm,
    Cache,
    CacheTier,
    Histogram,
    Percentiles,
    Snapshot,
    parse_snapshot,
)
from .times import format_time, parse_time

__all__ = [
    "CACHE_TIERS",
    "CONFIDENCE_BINS",
    "ERROR_CATEGORIES",
    "Action",
    "Arm",
    "Cache",
    "CacheTier",
    "ConditionResult",
    "ConditionStatus",
    "Decision",
    "Histogram",
    "IndicatorResult",
    "InputError",
    "NamedAction",
    "OutOfOrderError",
    "Percentiles",
    "PolicyRef",
    "RiskLevel",
    "Snapshot",
    "TestStatus",
    "Violation",
    "decision_id",
    "excerpt",
    "format_time",
    "parse_snapshot",
    "parse_time",
]
