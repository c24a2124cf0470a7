"""Compliance evidence for a rollback: the spec's fields, from the decision and its snapshot."""

from __future__ import annotations

from typing import Any

from ..contract import Arm, Decision, Snapshot, parse_time
from ..facts.latency import arm_summary


def rollback_evidence(
    decision: Decision,
    snapshot: Snapshot,
    raw: dict[str, Any],
    earlier: list[dict[str, Any]],
    decision_lag_seconds: float,
) -> dict[str, Any]:
    """`earlier` are the test's previous decisions, newest first (to find when trouble began)."""
    started = decision.timestamp
    for previous in earlier:
        if previous["action"] == "continue" and previous["risk_level"] == "low":
            break
        started = previous["timestamp"]
    return {
        "test_id": decision.test_id,
        "decision_id": decision.decision_id,
        "rollback_timestamp": decision.timestamp,
        "trigger_reason": decision.reason,
        "triggered_by": decision.triggered_by,
        "risk_score": decision.risk_score,
        "risk_conditions": [
            {
                "name": c.name,
                "status": c.status,
                "severity": c.severity,
                "indicators": [i.name for i in c.indicators if i.counting],
            }
            for c in decision.conditions
            if c.status in ("triggered", "critical")
        ],
        "performance_impact": {
            "champion": _arm_summary(snapshot.champion),
            "challenger": _arm_summary(snapshot.challenger),
        },
        "affected_users": {
            "rollout_percent_before": raw.get("rollout_percent"),
            "challenger_requests_last_interval": snapshot.challenger.requests,
        },
        "recovery_time": {
            "trouble_started": started,
            "detection_seconds": parse_time(decision.timestamp) - parse_time(started),
            "decision_lag_seconds": round(decision_lag_seconds, 3),
        },
        "policy": {"name": decision.policy.name, "version": decision.policy.version, "digest": decision.policy.digest},
    }


def _arm_summary(arm: Arm) -> dict[str, float | None]:
    latency = arm_summary(arm)
    return {
        "requests": arm.requests,
        "accuracy": arm.correct / arm.labeled if arm.labeled and arm.correct is not None else None,
        "error_rate": sum(arm.errors.values()) / arm.requests if arm.errors and arm.requests else None,
        "latency_mean_ms": latency.mean if latency is not None else None,
        "latency_p95_ms": latency.p95 if latency is not None else None,
    }
