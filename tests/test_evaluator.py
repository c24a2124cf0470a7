"""The evaluation pipeline: event time, isolation, duplicates, ordering, status, memory."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from engine.contract import OutOfOrderError, parse_snapshot
from engine.pipeline import Evaluator
from engine.policy import load_effective
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def policy():  # type: ignore[no-untyped-def]
    return load_effective([str(ROOT / "policies")])


def evaluate_all(evaluator: Evaluator, rows: list[dict[str, object]]) -> list[dict[str, Any]]:
    return [evaluator.evaluate(parse_snapshot(row)).to_dict() for row in rows]


def test_replaying_the_same_input_gives_the_same_decisions(policy) -> None:  # type: ignore[no-untyped-def]
    """Decisions depend on the snapshots only: two replays are identical, ids included."""
    rows = [json.loads(line) for line in (ROOT / "scenarios" / "error_storm.jsonl").read_text().splitlines()]
    first = evaluate_all(Evaluator(policy), rows)
    second = evaluate_all(Evaluator(policy), rows)
    assert first == second
    assert len({d["decision_id"] for d in first}) == len(first)


def test_interleaved_tests_are_isolated(policy) -> None:  # type: ignore[no-untyped-def]
    """Interleaving another test's snapshots changes nothing in a test's decisions."""
    storm = [json.loads(line) for line in (ROOT / "scenarios" / "error_storm.jsonl").read_text().splitlines()]
    healthy = [json.loads(line) for line in (ROOT / "scenarios" / "healthy.jsonl").read_text().splitlines()]
    alone = evaluate_all(Evaluator(policy), storm)
    mixed_evaluator = Evaluator(policy)
    mixed = []
    for a, b in zip(storm, healthy, strict=False):
        mixed.append(mixed_evaluator.evaluate(parse_snapshot(a)).to_dict())
        mixed_evaluator.evaluate(parse_snapshot(b))
    assert mixed == alone


def test_duplicate_snapshot_returns_the_recorded_decision(policy) -> None:  # type: ignore[no-untyped-def]
    """A resent snapshot (same test and timestamp) is answered, not counted twice."""
    evaluator = Evaluator(policy)
    first = evaluator.evaluate(parse_snapshot(snapshot(step=0)))
    evaluator.evaluate(parse_snapshot(snapshot(step=1)))
    resent = evaluator.evaluate(parse_snapshot(snapshot(step=0, requests=5)))
    assert resent is first
    after = evaluator.evaluate(parse_snapshot(snapshot(step=2)))
    assert after.conditions[0].samples == 3 * 6000  # three snapshots of 6000 labels, not four


def test_older_snapshot_is_refused(policy) -> None:  # type: ignore[no-untyped-def]
    """Windows only move forward: a snapshot older than the last one is an error naming the field."""
    evaluator = Evaluator(policy)
    for step in range(12):
        evaluator.evaluate(parse_snapshot(snapshot(step=step)))
    with pytest.raises(OutOfOrderError) as refused:
        evaluator.evaluate(parse_snapshot(snapshot(step=1)))
    assert refused.value.field == "timestamp"
    assert "older than" in str(refused.value)


def test_for_duration_counts_only_once_held(policy) -> None:  # type: ignore[no-untyped-def]
    """An indicator with `for: 2m` counts from the fifth 30 s snapshot it holds, not before."""
    evaluator = Evaluator(policy)
    storm: dict[str, Any] = {"errors": {"extraction": 9000, "serialization": 0, "timeout": 6000, "cache": 0}}  # 12.5%
    counted = []
    for step in range(8):
        decision = evaluator.evaluate(parse_snapshot(snapshot(step=step, **storm)))
        errors = next(c for c in decision.conditions if c.name == "error_rate")
        storm_indicator = next(i for i in errors.indicators if i.name == "error_rate.error_storm")
        counted.append((storm_indicator.held_seconds, storm_indicator.counting))
    assert counted[:5] == [(0, False), (30, False), (60, False), (90, False), (120, True)]


def test_a_gap_in_snapshots_restarts_for_streaks(policy) -> None:  # type: ignore[no-untyped-def]
    """Silence longer than two intervals breaks a streak: 'held' means seen holding throughout."""
    evaluator = Evaluator(policy)
    storm: dict[str, Any] = {"errors": {"extraction": 9000, "serialization": 0, "timeout": 6000, "cache": 0}}
    for step in (0, 1, 2, 10, 11):
        decision = evaluator.evaluate(parse_snapshot(snapshot(step=step, **storm)))
    errors = next(c for c in decision.conditions if c.name == "error_rate")
    held = {i.name: i.held_seconds for i in errors.indicators}
    assert held["error_rate.error_storm"] == 30


def test_rolled_back_test_stays_rolled_back_until_restart(policy) -> None:  # type: ignore[no-untyped-def]
    """After a rollback, healthy snapshots still get traffic 0; a restart clears it."""
    evaluator = Evaluator(policy)
    crash: dict[str, Any] = {"latency_ms": {"p50": 5.0, "p95": 9.0, "p99": 12.0, "mean": 5.5}}
    decisions = [evaluator.evaluate(parse_snapshot(snapshot(step=s, **crash))) for s in range(3)]
    assert decisions[1].action == "immediate_rollback"
    healthy = evaluator.evaluate(parse_snapshot(snapshot(step=3)))
    assert (healthy.action, healthy.target_rollout_percent, healthy.test_status) == ("rollback", 0.0, "rolled_back")
    assert "restart it to resume" in healthy.reason
    evaluator.restart("t1")
    again = evaluator.evaluate(parse_snapshot(snapshot(step=4)))
    assert again.test_status == "running"
    assert again.action == "continue"


def test_condition_traffic_action_lowers_target_at_low_score(policy) -> None:  # type: ignore[no-untyped-def]
    """Latency's 'to 10%' lowers the target even when the score is low; the action is reduce_rollout."""
    evaluator = Evaluator(policy)
    slow: dict[str, Any] = {"latency_ms": {"p50": 2.0, "p95": 3.5, "p99": 4.0, "mean": 2.1}}
    rows = [snapshot(step=s, **slow) for s in range(3)]
    for row in rows:
        row["rollout_percent"] = 50
    decision = evaluate_all(evaluator, rows)[-1]
    assert decision["risk_level"] == "low"
    assert decision["action"] == "reduce_rollout"
    assert decision["target_rollout_percent"] == 10.0
    assert {"name": "set_rollout", "params": {"percent": 10}, "condition": "latency"} in decision["actions"]


def test_reduce_rollout_factor_applies_once_per_episode(policy) -> None:  # type: ignore[no-untyped-def]
    """A gateway that applied 'halve the traffic' is not halved again on every snapshot."""
    evaluator = Evaluator(policy)
    low_accuracy: dict[str, Any] = {"correct": int(6000 * 0.83)}  # below 0.85, 7.8% under the champion: not critical
    targets = []
    rollout = 40.0
    for step in range(4):
        row = snapshot(step=step, **low_accuracy)
        row["rollout_percent"] = rollout
        decision = evaluator.evaluate(parse_snapshot(row))
        targets.append(decision.target_rollout_percent)
        rollout = decision.target_rollout_percent or rollout
    assert targets == [20.0, 20.0, 20.0, 20.0]


def test_decision_explains_itself(policy) -> None:  # type: ignore[no-untyped-def]
    """Each fired indicator lists observed value, threshold and held time; the reason quotes them."""
    evaluator = Evaluator(policy)
    decision = evaluate_all(evaluator, [snapshot(step=s, correct=int(6000 * 0.8)) for s in range(2)])[-1]
    accuracy = next(c for c in decision["conditions"] if c["name"] == "accuracy")
    below = next(i for i in accuracy["indicators"] if i["name"] == "accuracy.below_threshold")
    assert (below["observed"], below["threshold"], below["held_seconds"]) == (1.0, 1.0, 30)
    # a sequential statistic says which boundary it crossed, its estimate and always-valid interval
    assert below["detail"].startswith("accuracy.floor_alarm 1 >= 1: challenger accuracy (floor 0.85) 80.0% [")
    assert "since 2026-11-24T09:00:00Z; log-evidence 33.5 (alarm at 16.7, clears below 8.4)" in below["detail"]
    assert accuracy["contribution"] == pytest.approx(accuracy["weight"] * accuracy["severity"])
    assert below["detail"] in decision["reason"]
    assert decision["policy"]["digest"].startswith("sha256:")


def test_missing_blocks_make_conditions_inconclusive(policy) -> None:  # type: ignore[no-untyped-def]
    """A snapshot without latency or cache data leaves those conditions inconclusive, not ok."""
    row = snapshot(step=0)
    for arm in ("champion", "challenger"):
        del row[arm]["latency_ms"]  # type: ignore[attr-defined]
        del row[arm]["cache"]  # type: ignore[attr-defined]
    decision = Evaluator(policy).evaluate(parse_snapshot(row))
    statuses = {c.name: c.status for c in decision.conditions}
    assert statuses["latency"] == "inconclusive"
    assert statuses["cache_performance"] == "inconclusive"


def test_state_per_test_is_bounded_after_a_day(policy) -> None:  # type: ignore[no-untyped-def]
    """24 h of 30 s snapshots keep a test's state within 64 KiB, growing only while the 24 h baseline fills."""
    evaluator = Evaluator(policy)
    parsed = parse_snapshot(snapshot(step=0))
    windows = evaluator.state("t1").windows
    sizes = []
    for step in range(24 * 120):
        windows = windows.add(dataclasses.replace(parsed, timestamp=parsed.timestamp + 30 * step))
        if step % 720 == 719:
            sizes.append(len(pickle.dumps(windows)))
    assert max(sizes) <= 64 * 1024
    assert sizes == sorted(sizes)


def test_timestamp_beyond_what_can_be_written_is_refused_without_harm(policy) -> None:  # type: ignore[no-untyped-def]
    """A time past year 9998 is an input error naming `timestamp`, and the test's windows are untouched."""
    from engine.contract import InputError

    evaluator = Evaluator(policy)
    evaluator.evaluate(parse_snapshot(snapshot(step=0)))
    with pytest.raises(InputError) as refused:
        parse_snapshot({**snapshot(step=1), "timestamp": "9999-12-31T23:59:59-14:00"})
    assert refused.value.field == "timestamp"
    decision = evaluator.evaluate(parse_snapshot(snapshot(step=1)))
    assert next(c for c in decision.conditions if c.name == "throughput").samples == 2


def test_a_traffic_ramp_is_not_a_throughput_drop(policy) -> None:  # type: ignore[no-untyped-def]
    """Requests proportional to each snapshot's share give no relative drop while the share changes."""
    evaluator = Evaluator(policy)
    for step in range(10):
        share = 5 if step < 5 else 10
        row = snapshot(step=step)
        row["rollout_percent"] = share
        row["champion"]["requests"] = 40_000 * 30 * (100 - share) // 100  # type: ignore[index]
        row["challenger"]["requests"] = 40_000 * 30 * share // 100  # type: ignore[index]
        evaluator.evaluate(parse_snapshot(row))
    facts = evaluator.state("t1").windows.read(parse_snapshot(row), policy).facts
    assert facts["throughput.relative_drop"] == pytest.approx(0.0, abs=1e-9)


def test_eviction_rate_is_per_minute_of_reported_time(policy) -> None:  # type: ignore[no-untyped-def]
    """300 evictions every 30 s over 1000 entries is 0.6 per minute from the first snapshot on."""
    evaluator = Evaluator(policy)
    rates = []
    for step in range(4):
        row = snapshot(step=step)
        row["challenger"]["cache"]["evictions"] = 300  # type: ignore[index]
        row["challenger"]["cache"]["entries"] = 1000  # type: ignore[index]
        evaluator.evaluate(parse_snapshot(row))
        rates.append(evaluator.state("t1").windows.read(parse_snapshot(row), policy).facts["cache.eviction_rate"])
    assert rates == pytest.approx([0.6] * 4)
