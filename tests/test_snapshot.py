"""The metric snapshot contract: a full snapshot parses into typed values, each broken input raises
InputError naming the dotted path of the bad field, and timestamps parse and format as RFC 3339."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.contract import (
    Cache,
    CacheTier,
    Histogram,
    InputError,
    Percentiles,
    format_time,
    parse_snapshot,
    parse_time,
)

DELETE = object()  # marks a field to remove


def _valid() -> dict[str, Any]:
    """A snapshot using every field: the champion reports a latency histogram, the challenger percentiles."""
    return {
        "test_id": "ranker-v2",
        "timestamp": "2026-11-24T10:00:30Z",
        "interval_seconds": 30,
        "rollout_percent": 10.0,
        "champion": {
            "requests": 1000,
            "labeled": 100,
            "correct": 90,
            "latency_ms": {"bounds": [0.5, 1.0, 2.0, 5.0], "counts": [10, 500, 400, 80, 10]},
            "confidence_histogram": [1, 2, 3, 4, 5, 6, 7, 8, 9, 55],
            "errors": {"extraction": 3, "serialization": 1, "timeout": 2, "cache": 0},
            "retries": {"attempted": 5, "failed": 1},
            "cache": {
                "l1": {"hits": 600, "misses": 400},
                "l2": {"hits": 350, "misses": 50},
                "evictions": 2,
                "entries": 10000,
                "response_time_ms": 1.25,
            },
            "concurrent_requests": 12,
            "queue_depth": 3,
            "cpu_utilization": 0.45,
            "memory_utilization": 0.5,
            "duplicate_entity_rate": 0.01,
        },
        "challenger": {
            "requests": 120,
            "labeled": 12,
            "correct": 10,
            "latency_ms": {"p50": 1.1, "p95": 2.5, "p99": 4.0, "mean": 1.3},
            "confidence_histogram": [0, 0, 1, 1, 1, 1, 2, 2, 3, 1],
            "errors": {"timeout": 1},
            "retries": {"attempted": 2, "failed": 2},
            "cache": {"l3": {"hits": 5, "misses": 5}},
            "cpu_utilization": 0.4,
        },
    }


def _edit(changes: dict[str, Any]) -> dict[str, Any]:
    """The valid snapshot with dotted paths set (or removed, for DELETE); list items by index."""
    data = _valid()
    for path, value in changes.items():
        *parents, last = path.split(".")
        target: Any = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = copy.deepcopy(value)
    return data


def test_valid_snapshot_parses() -> None:
    """A snapshot using every field parses, keeping both latency forms and filling absent error categories."""
    snapshot = parse_snapshot(_valid())
    assert snapshot.test_id == "ranker-v2"
    assert snapshot.interval_seconds == 30.0
    assert snapshot.rollout_percent == 10.0
    assert snapshot.time_text == "2026-11-24T10:00:30Z"
    champion, challenger = snapshot.champion, snapshot.challenger
    assert champion.latency == Histogram((0.5, 1.0, 2.0, 5.0), (10, 500, 400, 80, 10))
    assert challenger.latency == Percentiles(p50=1.1, p95=2.5, p99=4.0, mean=1.3)
    assert (champion.requests, champion.labeled, champion.correct) == (1000, 100, 90)
    assert champion.confidence_histogram == (1, 2, 3, 4, 5, 6, 7, 8, 9, 55)
    assert champion.errors == {"extraction": 3, "serialization": 1, "timeout": 2, "cache": 0}
    assert challenger.errors == {"extraction": 0, "serialization": 0, "timeout": 1, "cache": 0}
    assert champion.retries == (5, 1)
    assert champion.cache == Cache(
        {"l1": CacheTier(600, 400), "l2": CacheTier(350, 50)}, evictions=2, entries=10000, response_time_ms=1.25
    )
    assert challenger.cache == Cache({"l3": CacheTier(5, 5)}, None, None, None)
    assert (champion.concurrent_requests, champion.queue_depth) == (12, 3)
    assert (champion.cpu_utilization, champion.memory_utilization, champion.duplicate_entity_rate) == (0.45, 0.5, 0.01)
    assert challenger.queue_depth is None


def test_minimal_snapshot_parses_with_defaults() -> None:
    """Only test_id, timestamp and the arms' requests are required; the interval defaults to 30 s."""
    snapshot = parse_snapshot(
        {
            "test_id": "t",
            "timestamp": "2026-11-24T10:00:00Z",
            "champion": {"requests": 0},
            "challenger": {"requests": 5},
        }
    )
    assert snapshot.interval_seconds == 30.0
    assert snapshot.rollout_percent is None
    assert snapshot.challenger.requests == 5
    assert snapshot.challenger.latency is None
    assert snapshot.challenger.labeled is None


def test_integral_float_counts_are_accepted() -> None:
    """A count written as 7.0 is the whole number 7."""
    snapshot = parse_snapshot(_edit({"challenger.requests": 7.0}))
    assert snapshot.challenger.requests == 7
    assert isinstance(snapshot.challenger.requests, int)


# (id, changes, expected InputError.field)
REJECTED = [
    ("not-an-object", None, "snapshot"),
    ("unknown-top-level-field", {"colour": "red"}, "colour"),
    ("unknown-arm-field", {"challenger.latncy_ms": {"p50": 1}}, "challenger.latncy_ms"),
    ("unknown-latency-field", {"challenger.latency_ms.p90": 2.0}, "challenger.latency_ms.p90"),
    ("unknown-cache-tier", {"champion.cache.l5": {"hits": 1, "misses": 1}}, "champion.cache.l5"),
    ("unknown-error-category", {"champion.errors.oom": 1}, "champion.errors.oom"),
    ("missing-test-id", {"test_id": DELETE}, "test_id"),
    ("blank-test-id", {"test_id": "   "}, "test_id"),
    ("numeric-test-id", {"test_id": 42}, "test_id"),
    ("too-long-test-id", {"test_id": "x" * 201}, "test_id"),
    ("missing-challenger", {"challenger": DELETE}, "challenger"),
    ("null-champion", {"champion": None}, "champion"),
    ("arm-not-an-object", {"challenger": [1, 2]}, "challenger"),
    ("missing-requests", {"champion.requests": DELETE}, "champion.requests"),
    ("nan-cpu-utilization", {"challenger.cpu_utilization": float("nan")}, "challenger.cpu_utilization"),
    ("infinite-memory-utilization", {"champion.memory_utilization": float("inf")}, "champion.memory_utilization"),
    ("cpu-utilization-above-one", {"challenger.cpu_utilization": 1.5}, "challenger.cpu_utilization"),
    ("string-cpu-utilization", {"challenger.cpu_utilization": "0.5"}, "challenger.cpu_utilization"),
    ("negative-requests", {"champion.requests": -1}, "champion.requests"),
    ("correct-above-labeled", {"challenger.correct": 13}, "challenger.correct"),
    ("labeled-missing-when-correct-given", {"challenger.labeled": DELETE}, "challenger.labeled"),
    ("bounds-not-increasing", {"champion.latency_ms.bounds": [0.5, 2.0, 1.0, 5.0]}, "champion.latency_ms.bounds"),
    ("bounds-repeated", {"champion.latency_ms.bounds": [0.5, 1.0, 1.0, 5.0]}, "champion.latency_ms.bounds"),
    ("bounds-start-at-zero", {"champion.latency_ms.bounds": [0.0, 1.0, 2.0, 5.0]}, "champion.latency_ms.bounds"),
    ("bounds-empty", {"champion.latency_ms": {"bounds": [], "counts": [1]}}, "champion.latency_ms.bounds"),
    ("bound-not-a-number", {"champion.latency_ms.bounds.1": "1ms"}, "champion.latency_ms.bounds[1]"),
    ("counts-length-mismatch", {"champion.latency_ms.counts": [10, 500, 400, 80]}, "champion.latency_ms.counts"),
    ("counts-missing", {"champion.latency_ms.counts": DELETE}, "champion.latency_ms.counts"),
    ("negative-latency-count", {"champion.latency_ms.counts.2": -4}, "champion.latency_ms.counts[2]"),
    (
        "confidence-histogram-wrong-length",
        {"challenger.confidence_histogram": [1, 2, 3]},
        "challenger.confidence_histogram",
    ),
    ("non-integer-count", {"champion.requests": 1.5}, "champion.requests"),
    ("non-integer-bin-count", {"challenger.confidence_histogram.4": 1.5}, "challenger.confidence_histogram[4]"),
    ("non-integer-latency-count", {"champion.latency_ms.counts.0": 1.5}, "champion.latency_ms.counts[0]"),
    ("boolean-requests", {"challenger.requests": True}, "challenger.requests"),
    ("boolean-labeled", {"champion.labeled": False}, "champion.labeled"),
    ("boolean-latency-count", {"champion.latency_ms.counts.1": True}, "champion.latency_ms.counts[1]"),
    ("boolean-bound", {"champion.latency_ms.bounds.0": True}, "champion.latency_ms.bounds[0]"),
    ("rollout-percent-120", {"rollout_percent": 120}, "rollout_percent"),
    ("rollout-percent-negative", {"rollout_percent": -1}, "rollout_percent"),
    ("timestamp-without-timezone", {"timestamp": "2026-11-24T10:00:00"}, "timestamp"),
    ("timestamp-date-only", {"timestamp": "2026-11-24"}, "timestamp"),
    ("timestamp-space-separator", {"timestamp": "2026-11-24 10:00:00Z"}, "timestamp"),
    ("garbage-timestamp", {"timestamp": "yesterday at ten"}, "timestamp"),
    ("numeric-timestamp", {"timestamp": 1795000000}, "timestamp"),
    ("missing-timestamp", {"timestamp": DELETE}, "timestamp"),
    ("interval-seconds-zero", {"interval_seconds": 0}, "interval_seconds"),
    ("interval-seconds-negative", {"interval_seconds": -30}, "interval_seconds"),
    ("retries-failed-above-attempted", {"champion.retries.failed": 6}, "champion.retries.failed"),
    ("retries-missing-attempted", {"champion.retries.attempted": DELETE}, "champion.retries.attempted"),
    ("p50-above-p95", {"challenger.latency_ms.p50": 3.0}, "challenger.latency_ms.p95"),
    ("p95-above-p99", {"challenger.latency_ms.p99": 2.0}, "challenger.latency_ms.p95"),
    ("percentile-missing", {"challenger.latency_ms.mean": DELETE}, "challenger.latency_ms.mean"),
    ("percentile-negative", {"challenger.latency_ms.p50": -0.1}, "challenger.latency_ms.p50"),
    ("latency-not-an-object", {"challenger.latency_ms": [1, 2]}, "challenger.latency_ms"),
    ("cache-tier-missing-hits", {"champion.cache.l1": {"misses": 4}}, "champion.cache.l1.hits"),
    ("cache-tier-missing-misses", {"challenger.cache.l3": {"hits": 4}}, "challenger.cache.l3.misses"),
    ("cache-response-time-negative", {"champion.cache.response_time_ms": -1}, "champion.cache.response_time_ms"),
]


@pytest.mark.parametrize(("changes", "field"), [pytest.param(c, f, id=i) for i, c, f in REJECTED])
def test_rejected_snapshot_names_field(changes: dict[str, Any] | None, field: str) -> None:
    """A snapshot breaking the contract raises InputError whose .field is the dotted path of the bad value."""
    data = None if changes is None else _edit(changes)
    with pytest.raises(InputError) as caught:
        parse_snapshot(data)
    assert caught.value.field == field
    assert caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_input_error_is_a_value_error() -> None:
    """InputError is a ValueError, so callers catching ValueError also catch contract breaches."""
    with pytest.raises(ValueError, match=r"^rollout_percent: "):
        parse_snapshot(_edit({"rollout_percent": 120}))


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        pytest.param("2026-11-24T12:00:00+02:00", "2026-11-24T10:00:00Z", id="plus-two-hours"),
        pytest.param("2026-11-24T05:30:00-04:30", "2026-11-24T10:00:00Z", id="minus-four-thirty"),
        pytest.param("2026-11-24T10:00:00+00:00", "2026-11-24T10:00:00Z", id="zero-offset"),
        pytest.param("2026-11-24t10:00:00z", "2026-11-24T10:00:00Z", id="lower-case-t-and-z"),
        pytest.param("2026-11-25T01:00:00+15:00", "2026-11-24T10:00:00Z", id="offset-crosses-date"),
    ],
)
def test_timestamp_offset_equals_utc(text: str, utc: str) -> None:
    """A timestamp with a UTC offset denotes the same instant as its UTC form."""
    assert parse_time(text) == parse_time(utc)
    assert parse_snapshot(_edit({"timestamp": text})).timestamp == parse_time(utc)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-11-24T10:00:00Z", id="whole-second"),
        pytest.param("2026-11-24T10:00:00.5Z", id="half-second"),
        pytest.param("2026-11-24T10:00:00.123456Z", id="microseconds"),
        pytest.param("1970-01-01T00:00:00Z", id="epoch"),
        pytest.param("2000-02-29T23:59:59.000001Z", id="leap-day"),
    ],
)
def test_format_time_round_trips_text(text: str) -> None:
    """format_time(parse_time(text)) gives back canonical UTC text with trailing zeros trimmed."""
    assert format_time(parse_time(text)) == text


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 4_102_444_800 * 10**6))  # up to 2100, in microseconds
def test_format_time_round_trips_timestamp(microseconds: int) -> None:
    """parse_time(format_time(t)) == t for any whole number of microseconds since the epoch."""
    timestamp = microseconds / 10**6
    text = format_time(timestamp)
    assert text.endswith("Z")
    assert parse_time(text) == timestamp
