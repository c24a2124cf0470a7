"""Rollback evidence: the spec's fields, with the performance impact of each arm read from
whichever latency form the snapshot used."""

from __future__ import annotations

import json
from pathlib import Path

from engine.policy import load_effective
from engine.service import Guard
from engine.store.sqlite import SqliteLog

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])


def test_histogram_snapshots_give_latency_in_the_evidence(tmp_path: Path) -> None:
    """A rollback decided on histogram snapshots records each arm's mean and p95 latency, not null."""
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    for line in (ROOT / "scenarios" / "latency_spike.jsonl").read_text().splitlines():
        guard.evaluate(json.loads(line))
    evidence = guard.log.evidence("latency-spike")
    guard.close()
    assert len(evidence) == 1
    impact = evidence[0]["performance_impact"]
    for arm in ("champion", "challenger"):
        assert impact[arm]["latency_mean_ms"] is not None and impact[arm]["latency_mean_ms"] > 0
        assert impact[arm]["latency_p95_ms"] >= impact[arm]["latency_mean_ms"] * 0.5
    assert impact["challenger"]["latency_p95_ms"] > impact["champion"]["latency_p95_ms"]
    assert evidence[0]["risk_conditions"][0]["name"] == "latency"
