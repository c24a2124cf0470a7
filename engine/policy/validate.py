"""Checks a policy set and reports every problem at once, each with a code, file:line and path."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from . import schema as schemas
from .catalog import ACTIONS, FACTS
from .diagnostics import Diagnostic, Path
from .documents import Document
from .durations import parse_duration
from .expr import ExprError, comparisons, dnf_branches, dnf_terms, parse
from .overlay import Merged

# durable_rules 2.0.28 fails with error 303 when more than 64 rules fire on one message
# (every `or` branch fires separately, the catch-all fires too) and hangs creating a
# ruleset with more than ~512 conditions under one parent. Stay well inside both.
MAX_FIRINGS = 63
MAX_COMPARISONS = 256
MAX_THRESHOLD = 1e12
WEIGHT_TOLERANCE = 1e-9


@cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(schemas.build(kind))


def check_document(document: Document) -> list[Diagnostic]:
    """Schema errors of one document, whatever its kind."""
    data = document.data
    if not isinstance(data, dict):
        return [document.diagnostic((), "schema-type", "a policy document must be a mapping")]
    kind = document.kind
    if kind not in schemas.SCHEMA_FILES:
        known = ", ".join(schemas.SCHEMA_FILES)
        return [document.diagnostic(("kind",), "unknown-kind", f"kind must be one of {known}, found {kind!r}")]
    problems = [_schema_diagnostic(document, error) for error in _validator(kind).iter_errors(data)]
    return problems + list(_non_finite(document, data, ()))


def _non_finite(document: Document, value: Any, path: Path) -> Iterator[Diagnostic]:
    """NaN and infinities slip through JSON Schema's bounds (every comparison with NaN is false)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield document.diagnostic(path, "number-not-finite", f"{value} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(document, item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(document, item, (*path, index))


def _schema_diagnostic(document: Document, error: Any) -> Diagnostic:
    path: Path = tuple(error.absolute_path)
    code = error.schema.get(schemas.CODE_KEY) if isinstance(error.schema, dict) else None
    message = error.message
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if extra:
            path = (*path, extra[0])
            message = f"unknown field '{extra[0]}'" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    elif error.validator == "required":
        message = f"missing required field: {error.message.split(' is a required')[0]}"
    if error.validator == "if":
        code = None
    if code == "duration-invalid":
        try:
            parse_duration(error.instance)
        except ValueError as bad:
            message = str(bad)
    elif code == "unknown-action":
        message = f"unknown action {error.instance!r} (see `abguard policy actions`)"
    return document.diagnostic(path, code or f"schema-{error.validator}", message)


def check_effective(merged: Merged) -> list[Diagnostic]:
    """Semantic checks on merged data that the schema cannot express; schema-valid input assumed."""
    spec = merged.data["spec"]
    problems: list[Diagnostic] = []
    problems += _check_weights(merged, spec["conditions"])
    for name, body in spec["conditions"].items():
        problems += _check_condition(merged, ("spec", "conditions", name), body)
    problems += _check_levels(merged, spec["levels"])
    problems += _check_rules(merged, spec["decision"]["rules"], {band["name"] for band in spec["levels"]})
    problems += _check_size(merged, spec["conditions"])
    problems += check_durations(merged)
    return problems


def _check_weights(merged: Merged, conditions: dict[str, Any]) -> list[Diagnostic]:
    total = math.fsum(float(body["weight"]) for body in conditions.values())
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        listed = ", ".join(f"{name} {body['weight']}" for name, body in conditions.items())
        return [merged.diagnostic(("spec", "conditions"), "weights-sum", f"weights sum to {total:g}, not 1 ({listed})")]
    return []


def _check_condition(merged: Merged, path: Path, body: dict[str, Any]) -> Iterator[Diagnostic]:
    thresholds = body.get("thresholds", {})
    for key, value in thresholds.items():
        if not math.isfinite(value) or abs(value) > MAX_THRESHOLD:
            yield merged.diagnostic(
                (*path, "thresholds", key), "threshold-range", f"{value} is outside ±{MAX_THRESHOLD:g}"
            )
    used: set[str] = set()
    seen: set[str] = set()
    parsed_all = True
    for index, item in enumerate(body["indicators"]):
        where = (*path, "indicators", index)
        if item["name"] in seen:
            yield merged.diagnostic(
                (*where, "name"), "duplicate-indicator", f"indicator '{item['name']}' is defined twice"
            )
        seen.add(item["name"])
        try:
            expr = parse(item["when"], FACTS, thresholds)
        except ExprError as error:
            yield merged.diagnostic((*where, "when"), error.code, f"{error.message} in {item['when']!r}")
            parsed_all = False
            continue
        used.update(name for leaf in _leaves(expr) for name in leaf)
    for key in thresholds if parsed_all else ():  # a broken expression may be the one using it
        if key not in used and key not in _ENGINE_THRESHOLDS:
            yield merged.diagnostic(
                (*path, "thresholds", key), "unused-threshold", f"threshold '{key}' is used by no indicator"
            )
    sensitivity = body.get("sensitivity")
    levels = body.get("sensitivity_levels") or {}
    if sensitivity is not None and sensitivity not in levels:
        yield merged.diagnostic(
            (*path, "sensitivity"), "unknown-sensitivity", f"no sensitivity_levels entry for '{sensitivity}'"
        )
    for index, action in enumerate(body.get("actions", [])):
        if action["name"] not in ACTIONS:
            continue  # the schema reported it
        yield from _check_action_params(merged, (*path, "actions", index), action)


# Thresholds the engine reads while deriving facts, rather than expressions.
_ENGINE_THRESHOLDS = {"concurrent_request_limit", "significance_level", "extreme_bins"}


def _leaves(expr: Any) -> Iterator[tuple[str, ...]]:
    for leaf in comparisons(expr):
        yield leaf.thresholds


def _check_action_params(merged: Merged, path: Path, action: dict[str, Any]) -> Iterator[Diagnostic]:
    spec = ACTIONS[action["name"]]
    params = action.get("params", {})
    for key in spec.required:
        if key not in params:
            yield merged.diagnostic(path, "action-param", f"action '{spec.name}' needs the parameter '{key}'")
    for key in params:
        if key not in spec.params:
            known = ", ".join(spec.params) or "none"
            yield merged.diagnostic(
                (*path, "params", key), "action-param", f"action '{spec.name}' takes no '{key}' (takes: {known})"
            )


def _check_levels(merged: Merged, levels: list[dict[str, Any]]) -> Iterator[Diagnostic]:
    expected = 0.0
    names = set()
    for index, band in enumerate(levels):
        where = ("spec", "levels", index)
        if band["name"] in names:
            yield merged.diagnostic((*where, "name"), "level-bands", f"level '{band['name']}' appears twice")
        names.add(band["name"])
        if band["min"] >= band["max"]:
            yield merged.diagnostic(
                where, "level-bands", f"band '{band['name']}' is empty: min {band['min']} >= max {band['max']}"
            )
        if not math.isclose(band["min"], expected, abs_tol=1e-12):
            problem = "overlaps the previous band" if band["min"] < expected else "leaves a gap after the previous band"
            yield merged.diagnostic(
                (*where, "min"),
                "level-bands",
                f"band '{band['name']}' starts at {band['min']}: {problem} (ends at {expected})",
            )
        expected = band["max"]
    if levels and not math.isclose(expected, 1.0):
        yield merged.diagnostic(("spec", "levels"), "level-bands", f"bands end at {expected}; scores go up to 1.0")


def _check_rules(merged: Merged, rules: list[dict[str, Any]], levels: set[str]) -> Iterator[Diagnostic]:
    default_at = None
    names: set[str] = set()
    for index, rule in enumerate(rules):
        where = ("spec", "decision", "rules", index)
        if rule["name"] in names:
            yield merged.diagnostic(
                (*where, "name"), "duplicate-rule", f"decision rule '{rule['name']}' is defined twice"
            )
        names.add(rule["name"])
        if default_at is not None:
            yield merged.diagnostic(
                where,
                "unreachable-rule",
                f"rule '{rule['name']}' comes after '{rules[default_at]['name']}', which always matches",
            )
        when = rule.get("if")
        if not when:
            default_at = index
            continue
        if "level" in when and when["level"] not in levels:
            yield merged.diagnostic((*where, "if", "level"), "unknown-level", f"no level band named '{when['level']}'")
        if "held_for" in when and "min_score" not in when and "level" not in when:
            yield merged.diagnostic(
                (*where, "if", "held_for"), "held-for-alone", "held_for needs min_score or level: held what?"
            )
    if default_at is None:
        yield merged.diagnostic(
            ("spec", "decision", "rules"),
            "no-default-rule",
            "the last decision rule must have no `if`, so every score gets an action",
        )


def _check_size(merged: Merged, conditions: dict[str, Any]) -> Iterator[Diagnostic]:
    firings = terms = 0
    for body in conditions.values():
        for item in body["indicators"]:
            try:
                expr = parse(item["when"], FACTS, body.get("thresholds", {}))
            except ExprError:
                continue
            firings += dnf_branches(expr)
            terms += dnf_terms(expr)
    if firings > MAX_FIRINGS or terms > MAX_COMPARISONS:
        yield merged.diagnostic(
            ("spec", "conditions"),
            "ruleset-too-large",
            f"the compiled ruleset could fire {firings} times on one message (limit {MAX_FIRINGS}) and has "
            f"{terms} comparisons after expanding `or` (limit {MAX_COMPARISONS}); durable_rules fails or "
            "hangs past these: split `or`s into separate indicators or drop some",
        )


def check_durations(merged: Merged) -> Iterator[Diagnostic]:
    """Durations the schema pattern accepted but that are zero."""
    for name, body in merged.data["spec"]["conditions"].items():
        for key in ("window", "baseline_window"):
            if key in body and parse_duration(body[key]) <= 0:
                yield merged.diagnostic(
                    ("spec", "conditions", name, key), "duration-invalid", f"{key} must be longer than zero"
                )
