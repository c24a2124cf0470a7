"""JSON Schemas (draft 2020-12) of the three document kinds, built from the catalogs.

`policies/schema/*.json` are generated from here (`abguard policy schema --write`) so
editors can complete policies; a test keeps the files and this module in step.
"""

from __future__ import annotations

import copy
from typing import Any

from .catalog import ACTIONS, CONDITIONS, DECISION_ACTIONS, FACTS, SENSITIVITIES

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILES = {
    "RiskPolicy": "risk-policy.schema.json",
    "Profile": "profile.schema.json",
    "Environment": "environment.schema.json",
}
LEVELS = ("low", "medium", "high", "critical")
NAME_PATTERN = "^[a-z][a-z0-9_]*$"
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$"
CODE_KEY = "x-abguard-code"  # a stable error code for failures under this subschema


def _duration(description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": DURATION_PATTERN, CODE_KEY: "duration-invalid", "description": description}


def _fraction(description: str) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": 1, "description": description}


_PARAM_TYPES: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "fraction": {"type": "number", "minimum": 0, "maximum": 1},
    "percent": {"type": "number", "minimum": 0, "maximum": 100},
    "string": {"type": "string", "minLength": 1},
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer", "minimum": 0},
}


def _action() -> dict[str, Any]:
    variants = []
    for spec in ACTIONS.values():
        params = {
            "type": "object",
            "properties": {name: dict(_PARAM_TYPES[kind]) for name, kind in spec.params.items()},
            "additionalProperties": False,
            "required": list(spec.required),
        }
        variants.append(
            {
                "if": {"properties": {"name": {"const": spec.name}}},
                "then": {"properties": {"params": params}, **({"required": ["params"]} if spec.required else {})},
            }
        )
    return {
        "type": "object",
        "description": "An automatic action the condition asks for when it triggers.",
        "properties": {
            "name": {
                "enum": sorted(ACTIONS),
                CODE_KEY: "unknown-action",
                "description": "see `abguard policy actions`",
            },
            "params": {"type": "object"},
        },
        "required": ["name"],
        "additionalProperties": False,
        "allOf": variants,
    }


def _indicator() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "description": {"type": "string"},
            "when": {
                "type": "string",
                "minLength": 1,
                "description": "Comparisons of facts with numbers, thresholds or another fact times a "
                "number, joined by and/or/not. Facts: " + ", ".join(sorted(FACTS)),
            },
            "for": _duration("how long `when` must hold continuously, in event time"),
            "severity": _fraction("the condition's severity while this indicator fires"),
            "critical": {"type": "boolean", "description": "firing makes the condition critical"},
            "actions": {
                "type": "array",
                "items": {"$ref": "#/$defs/action"},
                "description": "what this indicator asks for when it fires, instead of its condition's actions"
                " ([] asks for none: the condition's alert still fires)",
            },
        },
        "required": ["name", "when", "severity"],
        "additionalProperties": False,
    }


def _condition() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "description": {"type": "string"},
            "weight": _fraction("share of the risk score; the weights of all conditions sum to 1"),
            "window": _duration("rolling window of the condition's facts"),
            "baseline_window": _duration("window of the reference distribution"),
            "min_samples": {"type": "integer", "minimum": 0, "description": "fewer makes it inconclusive"},
            "sensitivity": {"enum": list(SENSITIVITIES)},
            "sensitivity_levels": {
                "type": "object",
                "propertyNames": {"enum": list(SENSITIVITIES)},
                "additionalProperties": {"type": "object", "additionalProperties": {"type": "number"}},
            },
            "thresholds": {
                "type": "object",
                "propertyNames": {"pattern": NAME_PATTERN},
                "additionalProperties": {"type": "number"},
                "description": "named numbers the `when` expressions use; profiles override them",
            },
            "indicators": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/indicator"}},
            "actions": {"type": "array", "items": {"$ref": "#/$defs/action"}},
        },
        "required": ["weight", "window", "min_samples", "indicators"],
        "additionalProperties": False,
    }


def _decision_rule() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "if": {
                "type": "object",
                "properties": {
                    "critical": {"const": True, "description": "any condition is critical"},
                    "min_score": _fraction("the risk score is at least this"),
                    "level": {"enum": list(LEVELS)},
                    "held_for": _duration("and has been for longer than this"),
                },
                "additionalProperties": False,
                "minProperties": 1,
            },
            "action": {"enum": list(DECISION_ACTIONS)},
            "confidence": _fraction("confidence reported with the action"),
            "triggered_by": {"type": "string"},
            "reason": {"type": "string"},
            "params": {"type": "object"},
        },
        "required": ["name", "action", "confidence", "reason"],
        "additionalProperties": False,
    }


def _spec() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "rollback_enabled": {"type": "boolean", "description": "false: decisions are advisory"},
            "auto_scaling_enabled": {"type": "boolean"},
            "notification_channels": {"type": "array", "items": {"type": "string"}},
            "statistics": {
                "type": "object",
                "description": "what the sequential statistics promise on healthy arms (docs/statistics.md)",
                "properties": {
                    "false_alarms_per_test_day": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 10,
                        "description": "expected false alarms per test-day of all sequential statistics together,"
                        " however often a test is evaluated (default 0.01)",
                    },
                    "batch": _duration("least event time a sequential statistic judges at once (default 30s)"),
                },
                "additionalProperties": False,
            },
            "conditions": {
                "type": "object",
                "properties": {name: {"$ref": "#/$defs/condition"} for name in CONDITIONS},
                "required": list(CONDITIONS),
                "additionalProperties": False,
            },
            "levels": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"enum": list(LEVELS)},
                        "min": {"type": "number", "minimum": 0, "maximum": 1},
                        "max": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["name", "min", "max"],
                    "additionalProperties": False,
                },
            },
            "decision": {
                "type": "object",
                "properties": {"rules": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/decision_rule"}}},
                "required": ["rules"],
                "additionalProperties": False,
            },
        },
        "required": ["rollback_enabled", "conditions", "levels", "decision"],
        "additionalProperties": False,
    }


def _metadata() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$"},
            "version": {"type": "integer", "minimum": 1},
            "description": {"type": "string"},
            "owners": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "version"],
        "additionalProperties": False,
    }


def _partial(schema: Any) -> Any:
    """An overlay's schema: every field optional, except the names that address list items."""
    if isinstance(schema, dict):
        out = {key: _partial(value) for key, value in schema.items() if key not in ("required", "minItems")}
        if "name" in schema.get("required", ()):
            out["required"] = ["name"]
        return out
    if isinstance(schema, list):
        return [_partial(item) for item in schema]
    return schema


def build(kind: str) -> dict[str, Any]:
    defs = {
        "condition": _condition(),
        "indicator": _indicator(),
        "action": _action(),
        "decision_rule": _decision_rule(),
    }
    spec = _spec()
    if kind != "RiskPolicy":
        defs, spec = _partial(defs), _partial(spec)
        # an overlay addresses actions and indicators by name, nothing else is required of it
        defs["action"].pop("allOf", None)
    return {
        "$schema": DIALECT,
        "$id": f"https://abguard.dev/schema/{SCHEMA_FILES[kind]}",
        "title": f"abguard {kind}",
        "type": "object",
        "properties": {
            "apiVersion": {"const": "abguard/v1"},
            "kind": {"const": kind},
            "metadata": _metadata(),
            "spec": spec,
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "$defs": copy.deepcopy(defs),
    }
