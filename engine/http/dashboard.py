"""The spec's `risk_dashboard` document of one test (pure), from its latest decisions and snapshots.

overall_risk_level, risk_score   the latest decision's
active_conditions                conditions triggered or critical, with their fired indicators
rolling_metrics                  trends over the last TREND decisions against the TREND before:
                                 challenger accuracy, mean latency, requests; the cache condition
test_health                      statistical_significance: a sequential statistic in alarm;
                                 sample_size_progress: challenger labels seen / the accuracy
                                 condition's min_samples (capped at 1); champion and challenger
                                 accuracy and mean latency over the decisions read
series                           per decision: time, risk score, target traffic, action (the chart)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..contract import parse_snapshot
from ..facts.latency import arm_summary
from ..policy.model import Policy

TREND = 10  # decisions on each side of a trend
STABLE = 0.02  # relative change within which a trend is "stable"
ALARM = "_alarm"  # suffix of the sequential statistics' alarm facts (accuracy.drop_alarm, ...)


def risk_dashboard(history: Sequence[tuple[dict[str, Any], dict[str, Any]]], policy: Policy) -> dict[str, Any]:
    """`history`: (decision, snapshot) pairs of one test, oldest first; at least one."""
    decision = history[-1][0]
    conditions = decision.get("conditions") or []
    active = [
        {
            "name": c["name"],
            "status": c["status"],
            "contribution": c.get("contribution"),
            "indicators": c.get("indicators") or [],
        }
        for c in conditions
        if c["status"] in ("triggered", "critical")
    ]
    arms = [_arms(snapshot) for _, snapshot in history]
    cache = next((c["status"] for c in conditions if c["name"] == "cache_performance"), "inconclusive")
    minimum = next((c.min_samples for c in policy.conditions if c.name == "accuracy"), 0)
    labels = sum(a["challenger"]["labeled"] for a in arms)
    return {
        "risk_dashboard": {
            "test_id": decision["test_id"],
            "as_of": decision["timestamp"],
            "overall_risk_level": decision["risk_level"],
            "risk_score": decision["risk_score"],
            "action": decision["action"],
            "test_status": decision.get("test_status"),
            "active_conditions": active,
            "rolling_metrics": {
                "accuracy_trend": _trend([a["challenger"]["accuracy"] for a in arms], higher_is_better=True),
                "latency_trend": _trend([a["challenger"]["latency_ms"] for a in arms], higher_is_better=False),
                "throughput_trend": _trend([a["challenger"]["requests"] for a in arms], higher_is_better=True),
                "cache_performance": {"ok": "optimal", "triggered": "degraded", "critical": "critical"}.get(
                    cache, "unknown"
                ),
            },
            "test_health": {
                "statistical_significance": _in_alarm(conditions),
                "sample_size_progress": round(min(1.0, labels / minimum), 4) if minimum else None,
                "performance_comparison": {arm: _overall(arms, arm) for arm in ("champion", "challenger")},
            },
            "series": [
                {
                    "timestamp": d["timestamp"],
                    "risk_score": d["risk_score"],
                    "target_rollout_percent": d.get("target_rollout_percent"),
                    "action": d["action"],
                    "risk_level": d["risk_level"],
                }
                for d, _ in history
            ],
            "policy": decision.get("policy"),
        }
    }


def _arms(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    snapshot = parse_snapshot(raw)
    out = {}
    for name, arm in (("champion", snapshot.champion), ("challenger", snapshot.challenger)):
        summary = arm_summary(arm)
        out[name] = {
            "labeled": arm.labeled or 0,
            "correct": arm.correct or 0,
            "accuracy": (arm.correct or 0) / arm.labeled if arm.labeled else None,
            "latency_ms": summary.mean if summary is not None else None,
            "requests": arm.requests,
        }
    return out


def _overall(arms: list[dict[str, dict[str, Any]]], arm: str) -> dict[str, float | None]:
    labeled = sum(a[arm]["labeled"] for a in arms)
    correct = sum(a[arm]["correct"] for a in arms)
    timed = [(a[arm]["latency_ms"], a[arm]["requests"]) for a in arms if a[arm]["latency_ms"] is not None]
    weight = sum(requests for _, requests in timed)
    latency = sum(mean * requests for mean, requests in timed) / weight if weight else None
    return {
        "accuracy": round(correct / labeled, 4) if labeled else None,
        "latency_ms": round(latency, 4) if latency is not None else None,
    }


def _trend(values: list[float | None], higher_is_better: bool) -> str:
    """improving, stable or degrading: the mean of the last TREND values against the TREND before."""
    known = [v for v in values if v is not None]
    if len(known) < 2 * TREND:
        return "insufficient_data"
    before, after = sum(known[-2 * TREND : -TREND]) / TREND, sum(known[-TREND:]) / TREND
    if before == 0:
        return "stable" if after == 0 else ("improving" if (after > 0) == higher_is_better else "degrading")
    change = (after - before) / abs(before)
    if abs(change) <= STABLE:
        return "stable"
    return "improving" if (change > 0) == higher_is_better else "degrading"


def _in_alarm(conditions: list[dict[str, Any]]) -> bool:
    """A sequential statistic's alarm fact among the fired indicators."""
    for condition in conditions:
        for indicator in condition.get("indicators") or []:
            if ALARM in str(indicator.get("detail", "")):
                return True
    return False
