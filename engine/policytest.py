"""Policy tests as data: snapshots in (a scenario file or inline), expected decisions out.

    cases:
      - name: accuracy regression rolls back immediately
        scenario: ../../scenarios/accuracy_regression.jsonl   # relative to the case file
        profile: balanced                                     # optional, as are env and policy
        expect:
          first: {action: immediate_rollback, not_before: "2026-11-24T09:20:00Z", critical: [accuracy]}
          never: [reduce_rollout]
          last: {test_status: rolled_back, target_rollout_percent: 0}

`first` finds the first decision with that action and checks its other keys (`not_before`,
`not_after`, `triggered_by`, `critical`, `triggered`, `reason_contains`); `never` lists
actions no decision may take; `last` compares fields of the final decision, and
`statuses: {condition: status}` its condition statuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .contract import Decision, parse_snapshot, parse_time
from .pipeline import Evaluator
from .policy.policyset import DEFAULT_PROFILE, load_effective

_FIRST_KEYS = {"action", "not_before", "not_after", "triggered_by", "critical", "triggered", "reason_contains"}


@dataclass
class CaseResult:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)
    decisions: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures


def discover(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        files += sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
    return files


class CaseFileError(Exception):
    """A file that is not a policy test file; the message names it and says why, on one line."""


def load_cases(path: Path) -> list[dict[str, Any]]:
    """The cases of a policy test file, after checking it is one: a `cases:` list of mappings whose
    `scenario` files exist. Raises CaseFileError otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CaseFileError(f"{path}: cannot read: {reason}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise CaseFileError(
            f"{where}: not a policy test file: invalid YAML: {error.problem or error.context}"
        ) from None
    except yaml.YAMLError as error:
        raise CaseFileError(f"{path}: not a policy test file: invalid YAML: {error}") from None
    if document is None:
        raise CaseFileError(f"{path}: not a policy test file: it is empty")
    if not isinstance(document, dict) or "cases" not in document:
        kind = document.get("kind") if isinstance(document, dict) else None
        seems = f" (it is a policy document of kind {kind})" if isinstance(kind, str) else ""
        raise CaseFileError(f"{path}: not a policy test file: it needs a top-level `cases:` list{seems}")
    cases = document["cases"]
    if not isinstance(cases, list):
        raise CaseFileError(f"{path}: not a policy test file: `cases:` must be a list of cases")
    for number, case in enumerate(cases, start=1):
        if not isinstance(case, dict):
            raise CaseFileError(f"{path}: case {number} must be a mapping (name, scenario, expect), found {case!r}")
        scenario = case.get("scenario")
        label = f"case {number} ({case['name']!r})" if "name" in case else f"case {number}"
        if "scenario" in case and not isinstance(scenario, str):
            raise CaseFileError(f"{path}: {label}: scenario must be a file name, found {scenario!r}")
        if isinstance(scenario, str) and not (path.parent / scenario).is_file():
            raise CaseFileError(f"{path}: {label}: scenario {scenario} does not exist ({path.parent / scenario})")
    return cases


def run_file(path: Path, policies: str) -> list[CaseResult]:
    """Every case of the file; CaseFileError when it is not a policy test file."""
    return [run_case(path, case, policies) for case in load_cases(path)]


def run_case(path: Path, case: dict[str, Any], policies: str) -> CaseResult:
    result = CaseResult(str(path), str(case.get("name", "(unnamed)")))
    try:
        profile = case.get("profile", DEFAULT_PROFILE)
        policy = load_effective([case.get("policy", policies)], None if profile == "none" else profile, case.get("env"))
        evaluator = Evaluator(policy)
        decisions = [evaluator.evaluate(parse_snapshot(raw)) for raw in _snapshots(path, case)]
    except Exception as error:  # a broken case is a failed case, reported with its cause
        result.failures.append(f"could not run: {type(error).__name__}: {error}")
        return result
    result.decisions = len(decisions)
    if not decisions:
        result.failures.append("no snapshots")
        return result
    expect = case.get("expect", {})
    result.failures += _check_first(decisions, expect.get("first"))
    result.failures += _check_never(decisions, expect.get("never", []))
    result.failures += _check_last(decisions[-1], expect.get("last", {}))
    return result


def _snapshots(path: Path, case: dict[str, Any]) -> list[Any]:
    if "scenario" in case:
        lines = (path.parent / case["scenario"]).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    return list(case.get("snapshots", []))


def _check_first(decisions: list[Decision], want: dict[str, Any] | None) -> list[str]:
    if not want:
        return []
    unknown = set(want) - _FIRST_KEYS
    if unknown:
        return [f"first: unknown keys {sorted(unknown)}"]
    found = next((d for d in decisions if d.action == want["action"]), None)
    if found is None:
        seen = sorted({d.action for d in decisions})
        return [f"first: no decision is {want['action']} (actions seen: {', '.join(seen)})"]
    failures = []
    moment = parse_time(found.timestamp)
    if "not_before" in want and moment < parse_time(want["not_before"]):
        failures.append(f"first {found.action} at {found.timestamp}, before {want['not_before']}: {found.reason}")
    if "not_after" in want and moment > parse_time(want["not_after"]):
        failures.append(f"first {found.action} at {found.timestamp}, after {want['not_after']}")
    if "triggered_by" in want and found.triggered_by != want["triggered_by"]:
        failures.append(f"first {found.action}: triggered_by {found.triggered_by}, expected {want['triggered_by']}")
    for status in ("critical", "triggered"):
        names = {c.name for c in found.conditions if c.status == status}
        missing = set(want.get(status, [])) - names
        if missing:
            failures.append(f"first {found.action}: {sorted(missing)} not {status} (were: {sorted(names)})")
    if "reason_contains" in want and want["reason_contains"] not in found.reason:
        failures.append(f"first {found.action}: reason lacks {want['reason_contains']!r}: {found.reason}")
    return failures


def _check_never(decisions: list[Decision], actions: list[str]) -> list[str]:
    bad = [d for d in decisions if d.action in actions]
    if bad:
        return [f"never {bad[0].action}, but at {bad[0].timestamp}: {bad[0].reason}"]
    return []


def _check_last(decision: Decision, want: dict[str, Any]) -> list[str]:
    got = decision.to_dict()
    failures = []
    statuses = {c.name: c.status for c in decision.conditions}
    for name, status in want.get("statuses", {}).items():
        if statuses.get(name) != status:
            failures.append(f"last: condition {name} is {statuses.get(name)}, expected {status}")
    for key, value in want.items():
        if key == "statuses":
            continue
        if key not in got:
            failures.append(f"last: no field {key!r}")
        elif got[key] != value:
            failures.append(f"last: {key} is {got[key]!r}, expected {value!r} ({decision.timestamp})")
    return failures
