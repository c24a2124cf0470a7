"""Content digest of an effective policy: same meaning, same digest; any semantic change, another."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .catalog import FACTS
from .durations import parse_duration
from .expr import parse, to_source

_DURATION_KEYS = {"window", "baseline_window", "for", "held_for"}
_PROSE_KEYS = {"description"}  # words for people; they change no decision


def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """Name, version and spec with durations in seconds, numbers normalised, expressions re-rendered."""
    spec = data["spec"]
    conditions = {name: _condition(body) for name, body in spec.get("conditions", {}).items()}
    body = {**spec, "conditions": conditions}
    return {"name": data["metadata"]["name"], "version": data["metadata"]["version"], "spec": _normalise(body)}


def _condition(body: dict[str, Any]) -> dict[str, Any]:
    thresholds = body.get("thresholds", {})
    indicators = [
        {**item, "when": to_source(parse(item["when"], FACTS, thresholds))} for item in body.get("indicators", [])
    ]
    return {**body, "indicators": indicators}


def _normalise(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, k) for k, v in value.items() if k not in _PROSE_KEYS}
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if key in _DURATION_KEYS and isinstance(value, str):
        return _number(parse_duration(value))
    if isinstance(value, float | int) and not isinstance(value, bool):
        return _number(value)
    return value


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def digest(data: dict[str, Any]) -> str:
    text = json.dumps(canonical(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
