"""Checks a policy set and reports every problem at once, each with a code, file:line and path."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from . import schema as schemas
from .catalog import ACTIONS, FACTS, SequentialStatistic
from .compiler import MAX_GROUPS, groups
from .diagnostics import Diagnostic, Path
from .documents import Document
from .durations import parse_duration
from .expr import ExprError, comparisons, dnf_branches, dnf_terms, parse
from .overlay import Merged
from .sequential import sequential_used

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


def check_effective(merged: Merged, skip: Unreadable | None = None) -> list[Diagnostic]:
    """Semantic checks the schema cannot express, on every part of the merged data that `skip` leaves readable."""
    skip = skip or Unreadable()
    spec = merged.data.get("spec") if isinstance(merged.data, dict) else None
    if not isinstance(spec, dict) or not skip.readable(("spec",)):
        return []
    problems: list[Diagnostic] = []
    conditions = spec.get("conditions")
    if isinstance(conditions, dict) and skip.readable(("spec", "conditions")):
        problems += _check_weights(merged, conditions, skip)
        statistics = sequential_used(conditions)
        problems += _check_sequential(merged, conditions, statistics, skip)
        for name, body in conditions.items():
            if skip.readable(("spec", "conditions", name)):
                needed = frozenset(key for stat in statistics if stat.condition == name for key in stat.thresholds)
                problems += _check_condition(merged, ("spec", "conditions", name), body, skip, needed)
        problems += _check_size(merged, conditions, skip)
        problems += check_durations(merged, skip)
    levels = spec.get("levels")
    if isinstance(levels, list) and skip.readable(("spec", "levels")):
        problems += _check_levels(merged, levels, skip)
    decision = spec.get("decision")
    rules = decision.get("rules") if isinstance(decision, dict) else None
    if isinstance(rules, list) and skip.readable(("spec", "decision", "rules")):
        problems += _check_rules(merged, rules, _level_names(levels, skip), skip)
    return problems


# Keywords whose failure leaves the value itself readable: an object missing or carrying keys, a list's length.
_STRUCTURAL = frozenset({"required", "additionalProperties", "minProperties", "maxProperties", "minItems", "maxItems"})


@dataclass
class Unreadable:
    """Where schema errors leave the merged data: the semantic checks skip what they could not trust."""

    values: set[Path] = field(default_factory=set)  # rejected values, missing required keys, unknown keys
    flagged: set[Path] = field(default_factory=set)  # every path with an error of any kind

    def readable(self, path: Path) -> bool:
        """Neither this value nor a container above it was rejected (it may have errors inside)."""
        return not any(path[:end] in self.values for end in range(len(path) + 1))

    def intact(self, path: Path) -> bool:
        """Readable and complete: no error about the value itself, such as a missing or an unknown key."""
        return self.readable(path) and path not in self.flagged

    def clean(self, path: Path) -> bool:
        """Readable with no error anywhere inside."""
        return self.readable(path) and not any(flagged[: len(path)] == path for flagged in self.flagged)

    def reject(self, path: Path) -> None:
        self.values.add(path)
        self.flagged.add(path)


def unreadable(data: Any, errors: Iterable[Any], rejected: Iterable[Path] = ()) -> Unreadable:
    """What jsonschema's `errors` on `data`, its non-finite numbers and the `rejected` paths leave unreadable."""
    skip = Unreadable()
    for error in errors:
        path: Path = tuple(error.absolute_path)
        skip.flagged.add(path)
        if error.validator == "required" and isinstance(error.instance, dict):
            for key in error.validator_value:
                if key not in error.instance:
                    skip.reject((*path, key))
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            for key in set(error.instance) - set(error.schema.get("properties", {})):
                skip.reject((*path, key))  # an unknown key: the schema checked nothing inside it
        elif error.validator not in _STRUCTURAL:
            skip.reject(path)
    for path in _non_finite_paths(data, ()):
        skip.reject(path)
    for path in rejected:
        skip.reject(path)
    return skip


def _non_finite_paths(value: Any, path: Path) -> Iterator[Path]:
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite_paths(item, (*path, index))


def _check_weights(merged: Merged, conditions: dict[str, Any], skip: Unreadable) -> list[Diagnostic]:
    """The sum needs every condition, each with a readable weight."""
    where = ("spec", "conditions")
    if not skip.intact(where) or not all(skip.readable((*where, name, "weight")) for name in conditions):
        return []
    total = math.fsum(float(body["weight"]) for body in conditions.values())
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        listed = ", ".join(f"{name} {body['weight']}" for name, body in conditions.items())
        return [merged.diagnostic(where, "weights-sum", f"weights sum to {total:g}, not 1 ({listed})")]
    return []


def _usable_thresholds(path: Path, body: dict[str, Any], skip: Unreadable) -> dict[str, Any] | None:
    """A condition's thresholds for parsing its expressions: a rejected value stands in as 1 (its name is
    known, so expressions using it are checked for everything else); None when the mapping is unreadable."""
    where = (*path, "thresholds")
    thresholds = body.get("thresholds", {})
    if not isinstance(thresholds, dict) or not skip.readable(where):
        return None
    return {key: value if skip.readable((*where, key)) else 1.0 for key, value in thresholds.items()}


def _check_sequential(
    merged: Merged, conditions: dict[str, Any], statistics: list[SequentialStatistic], skip: Unreadable
) -> Iterator[Diagnostic]:
    for statistic in statistics:
        path: Path = ("spec", "conditions", statistic.condition)
        body = conditions.get(statistic.condition)
        if not isinstance(body, dict) or not skip.readable((*path, "thresholds")):
            continue
        found = body.get("thresholds")
        thresholds: dict[str, Any] = found if isinstance(found, dict) else {}
        for key in statistic.thresholds:
            if key not in thresholds:
                yield merged.diagnostic(
                    (*path, "thresholds"),
                    "missing-threshold",
                    f"threshold '{key}' is needed by the sequential statistic {statistic.stem}_*",
                )


def _check_condition(
    merged: Merged, path: Path, body: dict[str, Any], skip: Unreadable, needed: frozenset[str] = frozenset()
) -> Iterator[Diagnostic]:
    thresholds = _usable_thresholds(path, body, skip)
    for key, value in (thresholds or {}).items():
        if skip.readable((*path, "thresholds", key)) and (not math.isfinite(value) or abs(value) > MAX_THRESHOLD):
            yield merged.diagnostic(
                (*path, "thresholds", key), "threshold-range", f"{value} is outside ±{MAX_THRESHOLD:g}"
            )
    used: set[str] = set()
    seen: set[str] = set()
    parsed_all = thresholds is not None and skip.intact((*path, "indicators"))
    indicators = body.get("indicators") if skip.readable((*path, "indicators")) else None
    for index, item in enumerate(indicators or []):
        where = (*path, "indicators", index)
        if skip.readable((*where, "name")):
            if item["name"] in seen:
                yield merged.diagnostic(
                    (*where, "name"), "duplicate-indicator", f"indicator '{item['name']}' is defined twice"
                )
            seen.add(item["name"])
        if thresholds is None or not skip.readable((*where, "when")):
            parsed_all = False
            continue
        try:
            expr = parse(item["when"], FACTS, thresholds)
        except ExprError as error:
            yield merged.diagnostic((*where, "when"), error.code, f"{error.message} in {item['when']!r}")
            parsed_all = False
            continue
        if groups(expr) > MAX_GROUPS:
            yield merged.diagnostic(
                (*where, "when"),
                "expr-too-nested",
                f"{item['when']!r} compiles to {groups(expr)} and/or groups; durable_rules takes at most "
                f"{MAX_GROUPS} in one rule: flatten the nesting or split it into separate indicators",
            )
        used.update(name for leaf in _leaves(expr) for name in leaf)
    if thresholds is not None and parsed_all:  # a broken expression may be the one using a threshold
        for key in thresholds:
            if key not in used and key not in needed and key not in _ENGINE_THRESHOLDS:
                yield merged.diagnostic(
                    (*path, "thresholds", key), "unused-threshold", f"threshold '{key}' is used by no indicator"
                )
    sensitivity = body.get("sensitivity")
    levels = body.get("sensitivity_levels") or {}
    readable = skip.readable((*path, "sensitivity")) and skip.readable((*path, "sensitivity_levels"))
    if readable and sensitivity is not None and sensitivity not in levels:
        yield merged.diagnostic(
            (*path, "sensitivity"), "unknown-sensitivity", f"no sensitivity_levels entry for '{sensitivity}'"
        )
    yield from _check_actions(merged, skip, path, body)
    for index, indicator in enumerate(body.get("indicators", []) if skip.readable((*path, "indicators")) else []):
        if isinstance(indicator, dict):
            yield from _check_actions(merged, skip, (*path, "indicators", index), indicator)


def _check_actions(merged: Merged, skip: Unreadable, path: Path, body: dict[str, Any]) -> Iterator[Diagnostic]:
    actions = body.get("actions", []) if skip.readable((*path, "actions")) else []
    for index, action in enumerate(actions):
        # the schema checks parameters too: only an action it found nothing wrong with is checked again
        if skip.clean((*path, "actions", index)) and action["name"] in ACTIONS:
            yield from _check_action_params(merged, (*path, "actions", index), action)


# Thresholds the engine reads while deriving facts (engine/facts/), rather than expressions.
_ENGINE_THRESHOLDS = {"concurrent_request_limit", "extreme_bins", "max_label_lag_seconds"}


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


def _level_names(levels: Any, skip: Unreadable) -> set[str] | None:
    """The names of the level bands; None when the list or one of the names cannot be read."""
    where = ("spec", "levels")
    if not isinstance(levels, list) or not skip.intact(where):
        return None
    if not all(skip.readable((*where, index, "name")) for index in range(len(levels))):
        return None
    return {band["name"] for band in levels}


def _check_levels(merged: Merged, levels: list[dict[str, Any]], skip: Unreadable) -> Iterator[Diagnostic]:
    expected: float | None = 0.0  # where the next band must start; None after a band with unreadable bounds
    names = set()
    for index, band in enumerate(levels):
        where = ("spec", "levels", index)
        if skip.readable((*where, "name")):
            if band["name"] in names:
                yield merged.diagnostic((*where, "name"), "level-bands", f"level '{band['name']}' appears twice")
            names.add(band["name"])
        low = band["min"] if skip.readable((*where, "min")) else None
        high = band["max"] if skip.readable((*where, "max")) else None
        label = band["name"] if skip.readable((*where, "name")) else f"#{index}"
        if low is not None and high is not None and low >= high:
            yield merged.diagnostic(where, "level-bands", f"band '{label}' is empty: min {low} >= max {high}")
        if low is not None and expected is not None and not math.isclose(low, expected, abs_tol=1e-12):
            problem = "overlaps the previous band" if low < expected else "leaves a gap after the previous band"
            yield merged.diagnostic(
                (*where, "min"), "level-bands", f"band '{label}' starts at {low}: {problem} (ends at {expected})"
            )
        expected = high
    if levels and expected is not None and not math.isclose(expected, 1.0):
        yield merged.diagnostic(("spec", "levels"), "level-bands", f"bands end at {expected}; scores go up to 1.0")


def _check_rules(
    merged: Merged, rules: list[dict[str, Any]], levels: set[str] | None, skip: Unreadable
) -> Iterator[Diagnostic]:
    default_at = None
    known = skip.intact(("spec", "decision", "rules"))  # whether every rule's `if` could be read
    names: set[str] = set()
    for index, rule in enumerate(rules):
        where = ("spec", "decision", "rules", index)
        if not skip.readable(where):
            known = False
            continue
        name = rule["name"] if skip.readable((*where, "name")) else f"#{index}"
        if skip.readable((*where, "name")):
            if name in names:
                yield merged.diagnostic((*where, "name"), "duplicate-rule", f"decision rule '{name}' is defined twice")
            names.add(name)
        if default_at is not None:
            yield merged.diagnostic(
                where, "unreachable-rule", f"rule '{name}' comes after '{default_at}', which always matches"
            )
        if "if" in rule and not skip.intact((*where, "if")):
            known = False
            continue
        when = rule.get("if")
        if not when:
            if default_at is None:
                default_at = name
            continue
        readable_level = "level" in when and levels is not None and skip.readable((*where, "if", "level"))
        if readable_level and when["level"] not in (levels or ()):
            yield merged.diagnostic((*where, "if", "level"), "unknown-level", f"no level band named '{when['level']}'")
        if "held_for" in when and "min_score" not in when and "level" not in when:
            yield merged.diagnostic(
                (*where, "if", "held_for"), "held-for-alone", "held_for needs min_score or level: held what?"
            )
    if default_at is None and known:
        yield merged.diagnostic(
            ("spec", "decision", "rules"),
            "no-default-rule",
            "the last decision rule must have no `if`, so every score gets an action",
        )


def _check_size(merged: Merged, conditions: dict[str, Any], skip: Unreadable) -> Iterator[Diagnostic]:
    """Counts what can be read: too large already is too large, whatever the unreadable parts would add."""
    firings = terms = 0
    for name, body in conditions.items():
        path = ("spec", "conditions", name)
        thresholds = _usable_thresholds(path, body, skip) if skip.readable(path) else None
        if thresholds is None or not skip.readable((*path, "indicators")):
            continue
        for index, item in enumerate(body["indicators"]):
            if not skip.readable((*path, "indicators", index, "when")):
                continue
            try:
                expr = parse(item["when"], FACTS, thresholds)
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


def check_durations(merged: Merged, skip: Unreadable | None = None) -> Iterator[Diagnostic]:
    """Durations the schema pattern accepted but that are zero."""
    skip = skip or Unreadable()
    spec = merged.data.get("spec") if isinstance(merged.data, dict) else None
    conditions = spec.get("conditions") if isinstance(spec, dict) else None
    if not isinstance(conditions, dict) or not skip.readable(("spec", "conditions")):
        return
    statistics = spec.get("statistics") if isinstance(spec, dict) else None
    batch = statistics.get("batch") if isinstance(statistics, dict) else None
    if batch is not None and skip.readable(("spec", "statistics", "batch")) and parse_duration(batch) <= 0:
        yield merged.diagnostic(("spec", "statistics", "batch"), "duration-invalid", "batch must be longer than zero")
    for name, body in conditions.items():
        for key in ("window", "baseline_window"):
            where = ("spec", "conditions", name, key)
            if skip.readable(where) and isinstance(body, dict) and key in body and parse_duration(body[key]) <= 0:
                yield merged.diagnostic(where, "duration-invalid", f"{key} must be longer than zero")
