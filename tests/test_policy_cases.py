"""The YAML policy tests in policies/tests run as part of the suite, one pytest case each."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine import policytest

ROOT = Path(__file__).resolve().parent.parent
FILES = policytest.discover([str(ROOT / "policies" / "tests")])
CASES = [(path, case) for path in FILES for case in yaml.safe_load(path.read_text())["cases"]]


@pytest.mark.parametrize(("path", "case"), CASES, ids=[case["name"] for _, case in CASES])
def test_policy_case(path: Path, case: dict[str, object]) -> None:
    """Each case's snapshots give the decisions it expects."""
    result = policytest.run_case(path, case, str(ROOT / "policies"))
    assert result.passed, "\n".join(result.failures)


def test_a_wrong_expectation_fails_with_the_reason(tmp_path: Path) -> None:
    """A case whose expectation is false fails and says what was seen instead."""
    case = {
        "name": "healthy is wrongly expected to roll back",
        "scenario": str(ROOT / "scenarios" / "healthy.jsonl"),
        "expect": {"first": {"action": "rollback"}, "last": {"test_status": "rolled_back"}},
    }
    result = policytest.run_case(tmp_path / "case.yaml", case, str(ROOT / "policies"))
    assert not result.passed
    assert "no decision is rollback (actions seen: continue)" in result.failures[0]
    assert "test_status is 'running', expected 'rolled_back'" in result.failures[1]


def test_a_broken_case_fails_instead_of_crashing(tmp_path: Path) -> None:
    """An unreadable scenario is a failed case with its cause."""
    case = {"name": "missing file", "scenario": "nope.jsonl"}
    result = policytest.run_case(tmp_path / "case.yaml", case, str(ROOT / "policies"))
    assert result.failures and "could not run" in result.failures[0]
