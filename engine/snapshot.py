"""The metric snapshot contract: parse and check a JSON object into typed values, naming the bad field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

CONFIDENCE_BINS = 10
ERROR_CATEGORIES = ("extraction", "serialization", "timeout", "cache")
CACHE_TIERS = ("l1", "l2", "l3", "l4")
MIN_TIME, MAX_TIME = 0.0, 253370764800.0  # 1970-01-01 and 9999-01-01: every time format_time can write


class InputError(ValueError):
    """A snapshot that breaks the contract; `field` is the dotted path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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


def format_time(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


_TOP = {"test_id", "timestamp", "interval_seconds", "rollout_percent", "champion", "challenger"}
_ARM = {
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
}


def parse_snapshot(data: Any) -> Snapshot:
    """A Snapshot from decoded JSON; InputError names the first bad field."""
    obj = _object(data, "snapshot")
    _no_unknown(obj, _TOP, "")
    test_id = obj.get("test_id")
    if not isinstance(test_id, str) or not test_id.strip():
        raise InputError("test_id", "required: a non-empty string")
    if len(test_id) > 200:
        raise InputError("test_id", "longer than 200 characters")
    interval = _number(obj, "interval_seconds", "", default=30.0)
    assert interval is not None
    if interval <= 0:
        raise InputError("interval_seconds", f"must be > 0, got {interval:g}")
    rollout = _number(obj, "rollout_percent", "", default=None)
    if rollout is not None and not 0 <= rollout <= 100:
        raise InputError("rollout_percent", f"must be within 0..100, got {rollout:g}")
    for arm in ("champion", "challenger"):
        if arm not in obj or obj[arm] is None:
            raise InputError(arm, "required: the metrics of both arms")
    return Snapshot(
        test_id=test_id,
        timestamp=parse_time(obj.get("timestamp")),
        interval_seconds=interval,
        rollout_percent=rollout,
        champion=_arm(obj["champion"], "champion"),
        challenger=_arm(obj["challenger"], "challenger"),
    )


def parse_time(value: Any) -> float:
    if not isinstance(value, str) or not value:
        raise InputError("timestamp", "required: an RFC 3339 time such as 2026-11-24T10:00:00Z")
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError("timestamp", f"{value!r} is not an RFC 3339 time (e.g. 2026-11-24T10:00:00Z)") from None
    if moment.tzinfo is None or "T" not in text.upper():
        raise InputError("timestamp", f"{value!r} needs a date, a time and a UTC offset (e.g. ...T10:00:00Z)")
    seconds = moment.timestamp()
    if not MIN_TIME <= seconds <= MAX_TIME:
        raise InputError("timestamp", f"{value!r} is outside the years 1970 to 9998")
    return seconds


def _arm(data: Any, where: str) -> Arm:
    obj = _object(data, where)
    _no_unknown(obj, _ARM, where)
    requests = _count(obj, "requests", where, required=True)
    assert requests is not None
    labeled = _count(obj, "labeled", where)
    correct = _count(obj, "correct", where)
    if correct is not None and labeled is None:
        raise InputError(f"{where}.labeled", "required when correct is given")
    if labeled is not None and correct is not None and correct > labeled:
        raise InputError(f"{where}.correct", f"{correct} correct is more than {labeled} labeled")
    return Arm(
        requests=requests,
        labeled=labeled,
        correct=correct,
        latency=_latency(obj.get("latency_ms"), f"{where}.latency_ms"),
        confidence_histogram=_confidence(obj.get("confidence_histogram"), f"{where}.confidence_histogram"),
        errors=_errors(obj.get("errors"), f"{where}.errors"),
        retries=_retries(obj.get("retries"), f"{where}.retries"),
        cache=_cache(obj.get("cache"), f"{where}.cache"),
        concurrent_requests=_count(obj, "concurrent_requests", where),
        queue_depth=_count(obj, "queue_depth", where),
        cpu_utilization=_fraction(obj, "cpu_utilization", where),
        memory_utilization=_fraction(obj, "memory_utilization", where),
        duplicate_entity_rate=_fraction(obj, "duplicate_entity_rate", where),
    )


def _latency(data: Any, where: str) -> Histogram | Percentiles | None:
    if data is None:
        return None
    obj = _object(data, where)
    if "bounds" in obj or "counts" in obj:
        _no_unknown(obj, {"bounds", "counts"}, where)
        bounds = _list(obj.get("bounds"), f"{where}.bounds")
        counts = _list(obj.get("counts"), f"{where}.counts")
        if all(type(b) is float and math.isfinite(b) for b in bounds):
            parsed_bounds = tuple(bounds)
        else:
            parsed_bounds = tuple(_finite(b, f"{where}.bounds[{i}]") for i, b in enumerate(bounds))
        if not parsed_bounds:
            raise InputError(f"{where}.bounds", "needs at least one upper bound")
        if any(b <= a for a, b in pairwise(parsed_bounds)) or parsed_bounds[0] <= 0:
            raise InputError(f"{where}.bounds", "upper bounds must be positive and strictly increasing")
        if len(counts) != len(parsed_bounds) + 1:
            raise InputError(
                f"{where}.counts",
                f"needs len(bounds)+1 = {len(parsed_bounds) + 1} counts (last is +Inf), got {len(counts)}",
            )
        return Histogram(parsed_bounds, _counts(counts, f"{where}.counts"))
    _no_unknown(obj, {"p50", "p95", "p99", "mean"}, where)
    values = {}
    for key in ("p50", "p95", "p99", "mean"):
        value = _number(obj, key, where, default=None)
        if value is None:
            raise InputError(f"{where}.{key}", "required: give bounds+counts or all of p50, p95, p99, mean")
        if value < 0:
            raise InputError(f"{where}.{key}", f"must be >= 0, got {value:g}")
        values[key] = value
    if not values["p50"] <= values["p95"] <= values["p99"]:
        raise InputError(f"{where}.p95", "percentiles must satisfy p50 <= p95 <= p99")
    return Percentiles(**values)


def _confidence(data: Any, where: str) -> tuple[int, ...] | None:
    if data is None:
        return None
    values = _list(data, where)
    if len(values) != CONFIDENCE_BINS:
        raise InputError(where, f"needs {CONFIDENCE_BINS} counts for [0,.1) ... [.9,1], got {len(values)}")
    return _counts(values, where)


def _errors(data: Any, where: str) -> dict[str, int] | None:
    if data is None:
        return None
    obj = _object(data, where)
    _no_unknown(obj, set(ERROR_CATEGORIES), where)
    return {key: _count(obj, key, where) or 0 for key in ERROR_CATEGORIES}


def _retries(data: Any, where: str) -> tuple[int, int] | None:
    if data is None:
        return None
    obj = _object(data, where)
    _no_unknown(obj, {"attempted", "failed"}, where)
    attempted = _count(obj, "attempted", where, required=True)
    failed = _count(obj, "failed", where, required=True)
    assert attempted is not None and failed is not None
    if failed > attempted:
        raise InputError(f"{where}.failed", f"{failed} failed is more than {attempted} attempted")
    return attempted, failed


def _cache(data: Any, where: str) -> Cache | None:
    if data is None:
        return None
    obj = _object(data, where)
    _no_unknown(obj, {*CACHE_TIERS, "evictions", "entries", "response_time_ms"}, where)
    tiers = {}
    for tier in CACHE_TIERS:
        if obj.get(tier) is None:
            continue
        tier_obj = _object(obj[tier], f"{where}.{tier}")
        _no_unknown(tier_obj, {"hits", "misses"}, f"{where}.{tier}")
        hits = _count(tier_obj, "hits", f"{where}.{tier}", required=True)
        misses = _count(tier_obj, "misses", f"{where}.{tier}", required=True)
        assert hits is not None and misses is not None
        tiers[tier] = CacheTier(hits, misses)
    response = _number(obj, "response_time_ms", where, default=None)
    if response is not None and response < 0:
        raise InputError(f"{where}.response_time_ms", f"must be >= 0, got {response:g}")
    return Cache(tiers, _count(obj, "evictions", where), _count(obj, "entries", where), response)


def _object(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError(where, f"must be an object, got {_kind(data)}")
    return data


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise InputError(where, f"must be a list, got {_kind(data)}")
    return data


def _no_unknown(obj: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in obj:
        if key not in known:
            prefix = f"{where}." if where else ""
            raise InputError(f"{prefix}{key}", f"unknown field (known: {', '.join(sorted(known))})")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(where, f"must be a number, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(where, f"must be a finite number, got {value}")
    return number


def _int(value: Any, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(
            where, f"must be a whole number, got {_kind(value) if not isinstance(value, float) else value}"
        )
    if value < 0:
        raise InputError(where, f"must be >= 0, got {value}")
    return value


def _counts(values: list[Any], where: str) -> tuple[int, ...]:
    """Non-negative whole numbers; checked in one pass when they all are (the usual case)."""
    if all(type(v) is int and v >= 0 for v in values):
        return tuple(values)
    return tuple(_int(v, f"{where}[{i}]") for i, v in enumerate(values))


def _count(obj: Mapping[str, Any], key: str, where: str, required: bool = False) -> int | None:
    value = obj.get(key)
    if type(value) is int and value >= 0:  # the usual case, before any path is formatted
        return value
    path = f"{where}.{key}" if where else key
    if value is None:
        if required:
            raise InputError(path, "required")
        return None
    return _int(value, path)


def _number(obj: Mapping[str, Any], key: str, where: str, default: float | None) -> float | None:
    value = obj.get(key)
    if value is None:
        return default
    if type(value) is float and math.isfinite(value):
        return value
    return _finite(value, f"{where}.{key}" if where else key)


def _fraction(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _number(obj, key, where, default=None)
    if value is not None and not 0 <= value <= 1:
        raise InputError(f"{where}.{key}", f"must be within 0..1, got {value:g}")
    return value
