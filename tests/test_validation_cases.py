"""Table-driven validation: each case in cases/validation.yaml edits the shipped policies and
expects exactly the listed errors, all reported in one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.policy import load_set, validate_set
from engine.rules.registry import register

CASES = yaml.safe_load((Path(__file__).parent / "cases" / "validation.yaml").read_text())


def _register(policy: Any, ruleset: dict[str, Any]) -> None:
    register(policy, ruleset)


def _set(data: Any, dotted: str, value: Any) -> None:
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    for part in parents:
        data = data[part]
    data[last] = value


def _delete(data: Any, dotted: str) -> None:
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    for part in parents:
        data = data[part]
    del data[last]


def _apply(case: dict[str, Any], root: Path) -> None:
    for name, text in case.get("write", {}).items():
        (root / name).write_text(text)
    if "file" not in case:
        return
    path = root / case["file"]
    text = path.read_text()
    for old, new in case.get("replace", {}).items():
        assert old in text, f"case {case['id']}: {old!r} not in {case['file']}"
        text = text.replace(old, new, 1)
    if "set" in case or "delete" in case:
        data = yaml.safe_load(text)
        for dotted in case.get("delete", []):
            _delete(data, dotted)
        for dotted, value in case.get("set", {}).items():
            _set(data, dotted, value)
        text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_validation_case(case: dict[str, Any], policy_dir: Path) -> None:
    """Validation reports exactly the expected codes at the expected paths (and lines, files where given)."""
    _apply(case, policy_dir)
    problems = validate_set(load_set([str(policy_dir)]), register=_register)
    got = {(p.code, p.path) for p in problems}
    want = {(e["code"], e["path"]) for e in case["expect"]}
    assert got == want, "\n".join(p.text() for p in problems)
    for expected in case["expect"]:
        match = [p for p in problems if (p.code, p.path) == (expected["code"], expected["path"])]
        if "line" in expected:
            assert {p.line for p in match} == {expected["line"]}
        if "file" in expected:
            assert {Path(p.file).relative_to(policy_dir).as_posix() for p in match} == {expected["file"]}
    for problem in problems:
        assert problem.file, "every error names its file"
