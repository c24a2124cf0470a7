"""Compliance evidence for a rollback: the spec's fields, from the decision and its snapshot."""

from __future__ import annotations

from typing import Any

from .decision import Decision
from .snapshot import parse_time


def rollback_evidence(
    decision: Decision, snapshot: dict[str, Any], earlier: list[dict[str, Any]], decision_lag_seconds: float
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
        "performance_impact": {arm: _arm_summary(snapshot.get(arm) or {}) for arm in ("champion", "challenger")},
        "affected_users": {
            "rollout_percent_before": snapshot.get("rollout_percent"),
            "challenger_requests_last_interval": (snapshot.get("challenger") or {}).get("requests"),
        },
        "recovery_time": {
            "trouble_started": started,
            "detection_seconds": parse_time(decision.timestamp) - parse_time(started),
            "decision_lag_seconds": round(decision_lag_seconds, 3),
        },
        "policy": dict(decision.policy),
    }


def _arm_summary(arm: dict[str, Any]) -> dict[str, float | None]:
    requests = arm.get("requests") or 0
    labeled, correct = arm.get("labeled"), arm.get("correct")
    errors = arm.get("errors") or {}
    latency = arm.get("latency_ms") or {}
    return {
        "requests": requests,
        "accuracy": correct / labeled if labeled and correct is not None else None,
        "error_rate": sum(errors.values()) / requests if errors and requests else None,
        "latency_mean_ms": latency.get("mean"),
        "latency_p95_ms": latency.get("p95"),
    }
