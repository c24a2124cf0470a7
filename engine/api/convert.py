"""Protobuf <-> the JSON-shaped dicts of the contract. Presence is kept: an unset field is absent."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from .v1 import risk_pb2 as pb

_ARM_COUNTS = ("requests", "labeled", "correct", "concurrent_requests", "queue_depth")
_ARM_REALS = ("cpu_utilization", "memory_utilization", "duplicate_entity_rate")
_ERRORS = ("extraction", "serialization", "timeout", "cache")
_TIERS = ("l1", "l2", "l3", "l4")


def snapshot_to_dict(message: pb.Snapshot) -> dict[str, Any]:
    """What the snapshot says, in the JSON contract's shape, for the one validation path."""
    data: dict[str, Any] = {}
    if message.test_id:
        data["test_id"] = message.test_id
    if message.timestamp:
        data["timestamp"] = message.timestamp
    for name in ("interval_seconds", "rollout_percent"):
        if message.HasField(name):
            data[name] = getattr(message, name)
    for arm in ("champion", "challenger"):
        if message.HasField(arm):
            data[arm] = _arm(getattr(message, arm))
    return data


def _arm(message: pb.ArmMetrics) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in (*_ARM_COUNTS, *_ARM_REALS):
        if message.HasField(name):
            data[name] = getattr(message, name)
    if message.HasField("latency_ms"):
        latency = message.latency_ms
        if latency.bounds or latency.counts:
            data["latency_ms"] = {"bounds": list(latency.bounds), "counts": list(latency.counts)}
        else:
            data["latency_ms"] = {k: getattr(latency, k) for k in ("p50", "p95", "p99", "mean") if latency.HasField(k)}
    if message.confidence_histogram:
        data["confidence_histogram"] = list(message.confidence_histogram)
    if message.HasField("errors"):
        data["errors"] = {k: getattr(message.errors, k) for k in _ERRORS if message.errors.HasField(k)}
    if message.HasField("retries"):
        data["retries"] = {
            k: getattr(message.retries, k) for k in ("attempted", "failed") if message.retries.HasField(k)
        }
    if message.HasField("cache"):
        cache = message.cache
        block: dict[str, Any] = {}
        for tier in _TIERS:
            if cache.HasField(tier):
                counts = getattr(cache, tier)
                block[tier] = {k: getattr(counts, k) for k in ("hits", "misses") if counts.HasField(k)}
        for name in ("evictions", "entries", "response_time_ms"):
            if cache.HasField(name):
                block[name] = getattr(cache, name)
        data["cache"] = block
    return data


def fill_decision(message: pb.Decision | pb.EvaluateResponse, decision: dict[str, Any]) -> None:
    """Write a decision dict into a Decision or an EvaluateResponse (they share their fields)."""
    message.decision_id = decision["decision_id"]
    message.test_id = decision["test_id"]
    message.timestamp = decision["timestamp"]
    message.action = enum_value(pb.Action, "ACTION_", decision["action"])
    message.confidence = decision["confidence"]
    message.reason = decision["reason"]
    message.triggered_by = decision["triggered_by"] or ""
    message.risk_score = decision["risk_score"]
    message.risk_level = enum_value(pb.RiskLevel, "RISK_LEVEL_", decision["risk_level"])
    for condition in decision["conditions"]:
        item = message.conditions.add(
            name=condition["name"],
            status=enum_value(pb.ConditionStatus, "CONDITION_STATUS_", condition["status"]),
            severity=condition["severity"],
            weight=condition["weight"],
            contribution=condition["contribution"],
            samples=condition["samples"],
            min_samples=condition["min_samples"],
        )
        for indicator in condition["indicators"]:
            found = item.indicators.add(
                name=indicator["name"],
                severity=indicator["severity"],
                critical=indicator["critical"],
                counting=indicator["counting"],
                held_seconds=indicator["held_seconds"],
                for_seconds=indicator["for_seconds"],
                detail=indicator["detail"],
            )
            for key in ("observed", "threshold"):
                if indicator[key] is not None:
                    setattr(found, key, indicator[key])
    if decision["target_rollout_percent"] is not None:
        message.target_rollout_percent = decision["target_rollout_percent"]
    for action in decision["actions"]:
        message.actions.add(name=action["name"], params=_struct(action["params"]), condition=action["condition"])
    message.enforced = decision["enforced"]
    message.policy.name = decision["policy"]["name"]
    message.policy.version = decision["policy"]["version"]
    message.policy.digest = decision["policy"]["digest"]
    message.test_status = enum_value(pb.TestStatus, "TEST_STATUS_", decision["test_status"])


_STRUCTS: dict[tuple[tuple[str, Any], ...], struct_pb2.Struct] = {}


def _struct(params: dict[str, Any]) -> struct_pb2.Struct:
    """Action parameters come from the policy, so the few distinct ones are built once."""
    key = tuple(sorted(params.items()))
    found = _STRUCTS.get(key)
    if found is None:
        found = struct_pb2.Struct()
        found.update(params)
        if len(_STRUCTS) < 4096:
            _STRUCTS[key] = found
    return found


def decision_to_dict(message: pb.Decision | pb.EvaluateResponse) -> dict[str, Any]:
    """The JSON-lines shape of a decision received over gRPC (what `abguard replay` prints)."""
    return {
        "decision_id": message.decision_id,
        "test_id": message.test_id,
        "timestamp": message.timestamp,
        "action": _word(pb.Action.Name(message.action), "ACTION_"),
        "confidence": message.confidence,
        "reason": message.reason,
        "triggered_by": message.triggered_by or None,
        "risk_score": message.risk_score,
        "risk_level": _word(pb.RiskLevel.Name(message.risk_level), "RISK_LEVEL_"),
        "conditions": [
            {
                "name": c.name,
                "status": _word(pb.ConditionStatus.Name(c.status), "CONDITION_STATUS_"),
                "severity": c.severity,
                "weight": c.weight,
                "contribution": c.contribution,
                "samples": c.samples,
                "min_samples": c.min_samples,
                "indicators": [
                    {
                        "name": i.name,
                        "severity": i.severity,
                        "critical": i.critical,
                        "counting": i.counting,
                        "held_seconds": i.held_seconds,
                        "for_seconds": i.for_seconds,
                        "observed": i.observed if i.HasField("observed") else None,
                        "threshold": i.threshold if i.HasField("threshold") else None,
                        "detail": i.detail,
                    }
                    for i in c.indicators
                ],
            }
            for c in message.conditions
        ],
        "target_rollout_percent": message.target_rollout_percent
        if message.HasField("target_rollout_percent")
        else None,
        "actions": [
            {"name": a.name, "params": _plain(dict(a.params)), "condition": a.condition} for a in message.actions
        ],
        "enforced": message.enforced,
        "policy": {"name": message.policy.name, "version": message.policy.version, "digest": message.policy.digest},
        "test_status": _word(pb.TestStatus.Name(message.test_status), "TEST_STATUS_"),
    }


def enum_value(enum: Any, prefix: str, word: str) -> Any:
    """The proto enum number for a contract word: ("ACTION_", "reduce_rollout") -> ACTION_REDUCE_ROLLOUT."""
    return enum.Value(prefix + word.upper())


def _word(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Struct numbers come back as floats; whole ones read better as ints."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in params.items()}
