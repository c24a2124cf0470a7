"""The metric snapshot contract: typed values, their numeric domain, and a parser that reports
every bad field at once.

The numeric domain is what the engine computes exactly: counts are whole numbers up to
MAX_COUNT per interval (window sums are Python integers, so they never round or drift),
intervals lie in [MIN_INTERVAL, MAX_INTERVAL] seconds, latencies in [0, MAX_LATENCY_MS],
shares and utilisations in [0, 1], the rollout in [0, 100]. Anything outside is refused
with the field's name; nothing infinite or NaN ever reaches a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .errors import EXCERPT, InputError, Violation, excerpt, kind
from .times import format_time, parse_time

CONFIDENCE_BINS = 10
ERROR_CATEGORIES = ("extraction", "serialization", "timeout", "cache")
CACHE_TIERS = ("l1", "l2", "l3", "l4")

MAX_COUNT = 10**12  # per interval: a trillion requests, labels, errors or lookups
MIN_INTERVAL, MAX_INTERVAL = 0.001, 86_400.0  # one millisecond to one day
MAX_LATENCY_MS = 3_600_000.0  # one hour
MAX_LATENCY_BOUNDS = 128
MAX_TEST_ID = 200


@dataclass(frozen=True, slots=True)
class Histogram:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    mean: float


@dataclass(frozen=True, slots=True)
class CacheTier:
    hits: int
    misses: int


@dataclass(frozen=True, slots=True)
class Cache:
    tiers: dict[str, CacheTier]
    evictions: int | None
    entries: int | None
    response_time_ms: float | None


@dataclass(frozen=True, slots=True)
class Arm:
    requests: int
    labeled: int | None = None
    correct: int | None = None
    latency: Histogram | Percentiles | None = None
    confidence_histogram: tuple[int, ...] | None = None
    errors: dict[str, int] | None = None
    retries: tuple[int, int] | None = None  # attempted, failed
    cache: Cache | None = None
    concurrent_requests: int | None = None
    queue_depth: int | None = None
    cpu_utilization: float | None = None
    memory_utilization: float | None = None
    duplicate_entity_rate: float | None = None
    labels_until: float | None = None  # the predictions this arm's labels cover end here (seconds since the epoch)


@dataclass(frozen=True, slots=True)
class Snapshot:
    test_id: str
    timestamp: float  # seconds since the epoch, end of the interval (event time)
    interval_seconds: float
    rollout_percent: float | None
    champion: Arm
    challenger: Arm

    @property
    def time_text(self) -> str:
        return format_time(self.timestamp)


_TOP = frozenset({"test_id", "timestamp", "interval_seconds", "rollout_percent", "champion", "challenger"})
_ARM = frozenset(
    {
        "requests",
        "labeled",
        "correct",
        "latency_ms",
        "confidence_histogram",
        "errors",
        "retries",
        "cache",
        "concurrent_requests",
        "queue_depth",
        "cpu_utilization",
        "memory_utilization",
        "duplicate_entity_rate",
        "labels_until",
    }
)


def parse_snapshot(data: Any) -> Snapshot:
    """A Snapshot from decoded JSON; InputError lists every bad field."""
    check = _Check()
    snapshot = check.snapshot(data)
    if check.problems or snapshot is None:
        raise InputError(check.problems or [Violation("snapshot", "is not a snapshot")])
    return snapshot


class _Check:
    """Parses while collecting violations: each reader returns None where its value is bad."""

    def __init__(self) -> None:
        self.problems: list[Violation] = []

    def fail(self, field: str, message: str) -> None:
        self.problems.append(Violation(field, message))

    # --- the snapshot and its arms ----------------------------------------------------------
    def snapshot(self, data: Any) -> Snapshot | None:
        obj = self.object(data, "snapshot")
        if obj is None:
            return None
        self.no_unknown(obj, _TOP, "")
        test_id = obj.get("test_id")
        if not isinstance(test_id, str) or not test_id.strip():
            self.fail("test_id", "required: a non-empty string")
        elif len(test_id) > MAX_TEST_ID:
            self.fail("test_id", f"longer than {MAX_TEST_ID} characters ({len(test_id)})")
        try:
            timestamp = parse_time(obj.get("timestamp"))
        except InputError as error:
            self.problems += error.violations
            timestamp = None
        interval = self.number(obj, "interval_seconds", "", 30.0, MIN_INTERVAL, MAX_INTERVAL, "seconds")
        rollout = self.number(obj, "rollout_percent", "", None, 0.0, 100.0)
        arms = {}
        for name in ("champion", "challenger"):
            if obj.get(name) is None:
                self.fail(name, "required: the metrics of both arms")
            else:
                arms[name] = self.arm(obj[name], name)
        for name, arm in arms.items():
            until = arm.labels_until if arm is not None else None
            if until is not None and timestamp is not None and until > timestamp:
                self.fail(
                    f"{name}.labels_until", "is after the snapshot's timestamp: no label covers a later prediction"
                )
        if self.problems:
            return None
        assert isinstance(test_id, str) and timestamp is not None and interval is not None
        champion, challenger = arms["champion"], arms["challenger"]
        assert champion is not None and challenger is not None
        return Snapshot(test_id, timestamp, interval, rollout, champion, challenger)

    def arm(self, data: Any, where: str) -> Arm | None:
        obj = self.object(data, where)
        if obj is None:
            return None
        self.no_unknown(obj, _ARM, where)
        before = len(self.problems)
        requests = self.count(obj, "requests", where, required=True)
        labeled = self.count(obj, "labeled", where)
        correct = self.count(obj, "correct", where)
        if correct is not None and labeled is None and "labeled" not in obj:
            self.fail(f"{where}.labeled", "required when correct is given")
        if labeled is not None and correct is not None and correct > labeled:
            self.fail(f"{where}.correct", f"{correct} correct is more than {labeled} labeled")
        arm = Arm(
            requests=requests or 0,
            labeled=labeled,
            correct=correct,
            latency=self.latency(obj.get("latency_ms"), f"{where}.latency_ms"),
            confidence_histogram=self.confidence(obj.get("confidence_histogram"), f"{where}.confidence_histogram"),
            errors=self.errors(obj.get("errors"), f"{where}.errors"),
            retries=self.retries(obj.get("retries"), f"{where}.retries"),
            cache=self.cache(obj.get("cache"), f"{where}.cache"),
            concurrent_requests=self.count(obj, "concurrent_requests", where),
            queue_depth=self.count(obj, "queue_depth", where),
            cpu_utilization=self.number(obj, "cpu_utilization", where, None, 0.0, 1.0),
            memory_utilization=self.number(obj, "memory_utilization", where, None, 0.0, 1.0),
            duplicate_entity_rate=self.number(obj, "duplicate_entity_rate", where, None, 0.0, 1.0),
            labels_until=self.time(obj, "labels_until", where),
        )
        return arm if len(self.problems) == before else None

    def time(self, obj: Any, key: str, where: str) -> float | None:
        """An optional RFC 3339 time (an empty string, proto3's unset, is none)."""
        value = obj.get(key)
        if value is None or value == "":
            return None
        try:
            return parse_time(value, f"{where}.{key}")
        except InputError as error:
            self.problems += error.violations
            return None

    # --- blocks -------------------------------------------------------------------------------
    def latency(self, data: Any, where: str) -> Histogram | Percentiles | None:
        if data is None:
            return None
        obj = self.object(data, where)
        if obj is None:
            return None
        if "bounds" in obj or "counts" in obj:
            return self.histogram(obj, where)
        self.no_unknown(obj, frozenset({"p50", "p95", "p99", "mean"}), where)
        values = {}
        for key in ("p50", "p95", "p99", "mean"):
            value = self.number(obj, key, where, None, 0.0, MAX_LATENCY_MS, "ms")
            if value is None and obj.get(key) is None:
                self.fail(f"{where}.{key}", "required: give bounds+counts or all of p50, p95, p99, mean")
            values[key] = value
        p50, p95, p99, mean = values["p50"], values["p95"], values["p99"], values["mean"]
        if p50 is None or p95 is None or p99 is None or mean is None:
            return None
        if not p50 <= p95 <= p99:
            self.fail(f"{where}.p95", "percentiles must satisfy p50 <= p95 <= p99")
            return None
        return Percentiles(p50, p95, p99, mean)

    def histogram(self, obj: Mapping[str, Any], where: str) -> Histogram | None:
        self.no_unknown(obj, frozenset({"bounds", "counts"}), where)
        bounds = self.sequence(obj.get("bounds"), f"{where}.bounds")
        counts = self.sequence(obj.get("counts"), f"{where}.counts")
        if bounds is None or counts is None:
            return None
        if not bounds or len(bounds) > MAX_LATENCY_BOUNDS:
            self.fail(f"{where}.bounds", f"needs 1 to {MAX_LATENCY_BOUNDS} upper bounds, got {len(bounds)}")
            return None
        if all(type(b) is float and 0 < b <= MAX_LATENCY_MS for b in bounds):
            parsed: tuple[float, ...] = tuple(bounds)
        else:
            checked = [self.real(b, f"{where}.bounds[{i}]", 0.0, MAX_LATENCY_MS, "ms") for i, b in enumerate(bounds)]
            if any(b is None for b in checked):
                return None
            parsed = tuple(b for b in checked if b is not None)
        if parsed[0] <= 0 or any(b <= a for a, b in pairwise(parsed)):
            self.fail(f"{where}.bounds", "upper bounds must be positive and strictly increasing")
            return None
        if len(counts) != len(parsed) + 1:
            self.fail(
                f"{where}.counts", f"needs len(bounds)+1 = {len(parsed) + 1} counts (last is +Inf), got {len(counts)}"
            )
            return None
        parsed_counts = self.counts(counts, f"{where}.counts")
        return Histogram(parsed, parsed_counts) if parsed_counts is not None else None

    def confidence(self, data: Any, where: str) -> tuple[int, ...] | None:
        if data is None:
            return None
        values = self.sequence(data, where)
        if values is None:
            return None
        if len(values) != CONFIDENCE_BINS:
            self.fail(where, f"needs {CONFIDENCE_BINS} counts for [0,.1) ... [.9,1], got {len(values)}")
            return None
        return self.counts(values, where)

    def errors(self, data: Any, where: str) -> dict[str, int] | None:
        if data is None:
            return None
        obj = self.object(data, where)
        if obj is None:
            return None
        self.no_unknown(obj, frozenset(ERROR_CATEGORIES), where)
        return {key: self.count(obj, key, where) or 0 for key in ERROR_CATEGORIES}

    def retries(self, data: Any, where: str) -> tuple[int, int] | None:
        if data is None:
            return None
        obj = self.object(data, where)
        if obj is None:
            return None
        self.no_unknown(obj, frozenset({"attempted", "failed"}), where)
        attempted = self.count(obj, "attempted", where, required=True)
        failed = self.count(obj, "failed", where, required=True)
        if attempted is None or failed is None:
            return None
        if failed > attempted:
            self.fail(f"{where}.failed", f"{failed} failed is more than {attempted} attempted")
            return None
        return attempted, failed

    def cache(self, data: Any, where: str) -> Cache | None:
        if data is None:
            return None
        obj = self.object(data, where)
        if obj is None:
            return None
        self.no_unknown(obj, frozenset({*CACHE_TIERS, "evictions", "entries", "response_time_ms"}), where)
        tiers = {}
        for tier in CACHE_TIERS:
            if obj.get(tier) is None:
                continue
            tier_obj = self.object(obj[tier], f"{where}.{tier}")
            if tier_obj is None:
                continue
            self.no_unknown(tier_obj, frozenset({"hits", "misses"}), f"{where}.{tier}")
            hits = self.count(tier_obj, "hits", f"{where}.{tier}", required=True)
            misses = self.count(tier_obj, "misses", f"{where}.{tier}", required=True)
            if hits is not None and misses is not None:
                tiers[tier] = CacheTier(hits, misses)
        response = self.number(obj, "response_time_ms", where, None, 0.0, MAX_LATENCY_MS, "ms")
        return Cache(tiers, self.count(obj, "evictions", where), self.count(obj, "entries", where), response)

    # --- values ---------------------------------------------------------------------------------
    def object(self, data: Any, where: str) -> Mapping[str, Any] | None:
        if not isinstance(data, Mapping):
            self.fail(where, f"must be an object, got {kind(data)}")
            return None
        return data

    def sequence(self, data: Any, where: str) -> list[Any] | None:
        if not isinstance(data, list):
            self.fail(where, f"must be a list, got {kind(data)}")
            return None
        return data

    def no_unknown(self, obj: Mapping[str, Any], known: frozenset[str], where: str) -> None:
        for key in obj:
            if key not in known:
                prefix = f"{where}." if where else ""
                name = str(key) if len(str(key)) <= EXCERPT else str(key)[: EXCERPT - 3] + "..."
                name = name if name.strip() else repr(name)  # an empty or blank key is still named: '' or ' '
                self.fail(f"{prefix}{name}", _unknown(known))

    def count(self, obj: Mapping[str, Any], key: str, where: str, required: bool = False) -> int | None:
        value = obj.get(key)
        if type(value) is int and 0 <= value <= MAX_COUNT:  # the usual case, before any path is formatted
            return value
        path = f"{where}.{key}" if where else key
        if value is None:
            if required:
                self.fail(path, "required")
            return None
        return self.whole(value, path)

    def counts(self, values: list[Any], where: str) -> tuple[int, ...] | None:
        """Whole numbers in the domain; checked in one pass when they all are (the usual case)."""
        if all(type(v) is int and 0 <= v <= MAX_COUNT for v in values):
            return tuple(values)
        checked = [self.whole(v, f"{where}[{i}]") for i, v in enumerate(values)]
        if any(v is None for v in checked):
            return None
        return tuple(v for v in checked if v is not None)

    def whole(self, value: Any, where: str) -> int | None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            got = value if isinstance(value, float) else kind(value)
            self.fail(where, f"must be a whole number, got {got}")
            return None
        if value < 0:
            self.fail(where, f"must be >= 0, got {excerpt(value)}")
            return None
        if value > MAX_COUNT:
            self.fail(where, f"must be at most {MAX_COUNT:.0e} (a count per interval), got {excerpt(value)}")
            return None
        return value

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        where: str,
        default: float | None,
        low: float,
        high: float,
        unit: str = "",
    ) -> float | None:
        value = obj.get(key)
        if value is None:
            return default
        if type(value) is float and low <= value <= high:
            return value
        return self.real(value, f"{where}.{key}" if where else key, low, high, unit)

    def real(self, value: Any, where: str, low: float, high: float, unit: str = "") -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"must be a number, got {kind(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(where, f"must be a finite number, got {value}")
            return None
        if not low <= value <= high:
            suffix = f" {unit}" if unit else ""
            if value < 0 <= low:
                self.fail(where, f"must be >= {low:g}{suffix}, got {excerpt(value)}")
            else:
                self.fail(where, f"must be within {low:g}..{high:g}{suffix}, got {excerpt(value)}")
            return None
        return float(value)


def _unknown(known: frozenset[str]) -> str:
    return f"unknown field (known: {', '.join(sorted(known))})"
