"""The `abguard policy` verbs as a user runs them: exit codes, output, digests, diffs, golden rulesets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.cli import main
from engine.cli.policy import schema_texts

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def digest_of(capsys: pytest.CaptureFixture[str], policies: Path, *extra: str) -> str:
    code, out, _ = run(capsys, "policy", "show", "--policies", str(policies), "--format", "json", *extra)
    assert code == 0
    return str(json.loads(out)["metadata"]["digest"])


def test_validate_shipped_policies_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped policies validate with exit 0 and no findings."""
    code, out, _ = run(capsys, "policy", "validate", str(ROOT / "policies"))
    assert code == 0
    assert out == ""


def test_validate_json_lists_every_error(capsys: pytest.CaptureFixture[str], policy_dir: Path) -> None:
    """--format json gives code, file, line and path of each error, and exit 1."""
    default = policy_dir / "default.yaml"
    default.write_text(default.read_text().replace("weight: 0.25", "weight: 0.35").replace("for: 10m", "for: 10 min"))
    code, out, _ = run(capsys, "policy", "validate", str(policy_dir), "--format", "json")
    report = json.loads(out)
    assert code == 1
    assert report["valid"] is False
    error = report["errors"][0]
    assert set(error) == {"code", "file", "line", "path", "message"}
    assert {(e["code"], e["path"]) for e in report["errors"]} == {
        ("duration-invalid", "spec.conditions.accuracy.indicators[3].for"),
        ("weights-sum", "spec.conditions"),
    }


def test_validate_reports_schema_and_semantic_errors_in_one_run(
    capsys: pytest.CaptureFixture[str], policy_dir: Path
) -> None:
    """A schema error and weights that do not sum to 1 are both reported, each with file:line, path and code."""
    default = policy_dir / "default.yaml"
    text = default.read_text().replace("weight: 0.25", "weight: 0.30", 1).replace("severity: 0.6", "severity: 1.6", 1)
    default.write_text(text)
    code, out, err = run(capsys, "policy", "validate", str(policy_dir))
    assert code == 1
    weights, severity = out.splitlines()
    assert weights.startswith(f"{default}:30: spec.conditions: weights sum to 1.05, not 1 (accuracy 0.3, ")
    assert weights.endswith("[weights-sum]")
    assert severity == (
        f"{default}:47: spec.conditions.accuracy.indicators[0].severity: 1.6 is greater than the maximum of 1 "
        "[schema-maximum]"
    )
    assert err == "2 errors\n"


def test_validate_missing_path_exits_two(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A path that does not exist is a usage error, not an invalid policy."""
    code, _, err = run(capsys, "policy", "validate", str(tmp_path / "nope"))
    assert code == 2
    assert "no such file or folder" in err


def test_validate_explains_a_bad_duration(capsys: pytest.CaptureFixture[str], policy_dir: Path) -> None:
    """A malformed duration says what a duration looks like, not the schema's regular expression."""
    default = policy_dir / "default.yaml"
    default.write_text(default.read_text().replace("for: 10m", "for: ten minutes"))
    code, out, _ = run(capsys, "policy", "validate", str(policy_dir))
    assert code == 1
    assert "'ten minutes' is not a duration: write a number and one unit of ms, s, m, h, d" in out


def test_validate_usage_error_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option is a usage error: exit 2."""
    with pytest.raises(SystemExit) as stopped:
        main(["policy", "validate", "--format", "xml"])
    assert stopped.value.code == 2


def test_show_prints_name_version_digest(capsys: pytest.CaptureFixture[str]) -> None:
    """show merges base + profile + environment and names the result."""
    code, out, _ = run(
        capsys, "policy", "show", "--policies", str(ROOT / "policies"), "--profile", "conservative", "--env", "dev"
    )
    document = yaml.safe_load(out)
    assert code == 0
    assert document["metadata"]["name"] == "default"
    assert document["metadata"]["digest"].startswith("sha256:")
    assert document["spec"]["rollback_enabled"] is False
    assert document["spec"]["conditions"]["accuracy"]["thresholds"]["accuracy_threshold"] == 0.70
    assert document["spec"]["conditions"]["anomaly"]["sensitivity"] == "high"


def test_digest_is_stable_across_runs_and_cosmetic_edits(capsys: pytest.CaptureFixture[str], policy_dir: Path) -> None:
    """Comments, key order, quoting and `60s` vs `1m` do not change the digest."""
    before = digest_of(capsys, policy_dir)
    assert digest_of(capsys, policy_dir) == before
    default = policy_dir / "default.yaml"
    text = default.read_text().replace("for: 60s", "for: 1m").replace("weight: 0.20", "weight: 0.2  # performance")
    text = text.replace("when: errors.rate > error_rate_baseline", "when: 'errors.rate>error_rate_baseline'")
    default.write_text("# reformatted\n" + text)
    assert digest_of(capsys, policy_dir) == before


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("accuracy_threshold: 0.85", "accuracy_threshold: 0.86"),
        ("for: 10m", "for: 11m"),
        ("severity: 0.8\n", "severity: 0.81\n"),
        ("rollback_enabled: true", "rollback_enabled: false"),
        ("action: reduce_rollout", "action: rollback"),
    ],
    ids=["threshold", "for", "severity", "rollback-enabled", "decision-action"],
)
def test_digest_changes_on_any_semantic_change(
    capsys: pytest.CaptureFixture[str], policy_dir: Path, old: str, new: str
) -> None:
    """Any change that can alter a decision gives a different digest."""
    before = digest_of(capsys, policy_dir, "--profile", "none")
    default = policy_dir / "default.yaml"
    assert old in default.read_text()
    default.write_text(default.read_text().replace(old, new, 1))
    assert digest_of(capsys, policy_dir, "--profile", "none") != before


def test_profiles_and_environments_give_distinct_digests(capsys: pytest.CaptureFixture[str]) -> None:
    """Each profile x environment is its own effective policy."""
    policies = ROOT / "policies"
    digests = {
        digest_of(capsys, policies, "--profile", profile, "--env", env)
        for profile in ("conservative", "aggressive")
        for env in ("dev", "prod")
    }
    assert len(digests) == 4


def test_show_unknown_profile_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for a profile that does not exist says which exist."""
    code, _, err = run(capsys, "policy", "show", "--policies", str(ROOT / "policies"), "--profile", "reckless")
    assert code == 1
    assert "unknown-profile" in err
    assert "aggressive" in err


def test_diff_judges_threshold_direction(capsys: pytest.CaptureFixture[str], policy_dir: Path, tmp_path: Path) -> None:
    """Raising a `<` threshold is stricter, raising a `>` one looser; severities and `for` are judged too."""
    old = policy_dir / "default.yaml"
    new = tmp_path / "new.yaml"
    new.write_text(
        old.read_text()
        .replace("accuracy_threshold: 0.85", "accuracy_threshold: 0.9")
        .replace("error_rate_threshold: 0.05", "error_rate_threshold: 0.07")
        .replace("for: 10m", "for: 5m")
        .replace("when: errors.increase_alarm >= 1\n", "when: errors.rate > 0.02\n")
        .replace("false_alarms_per_test_day: 0.01", "false_alarms_per_test_day: 0.05")
        .replace("name: high_risk\n        if: {min_score: 0.8}", "name: high_risk\n        if: {min_score: 0.75}")
    )
    code, out, _ = run(capsys, "policy", "diff", str(old), str(new), "--format", "json")
    changes = {c["path"]: c for c in json.loads(out)["changes"]}
    assert code == 1
    assert changes["spec.conditions.accuracy.thresholds.accuracy_threshold"]["effect"] == "stricter"
    assert changes["spec.conditions.error_rate.thresholds.error_rate_threshold"]["effect"] == "looser"
    assert changes["spec.conditions.accuracy.indicators.below_threshold_sustained.for"]["effect"] == "stricter"
    assert changes["spec.conditions.error_rate.indicators.above_baseline.when"]["old"] == "errors.increase_alarm >= 1"
    assert changes["spec.decision.rules.high_risk.if.min_score"]["effect"] == "stricter"
    budget = changes["spec.statistics.false_alarms_per_test_day"]
    assert (budget["old"], budget["new"], budget["effect"]) == (0.01, 0.05, "stricter")
    assert len(changes) == 6


def test_diff_literal_in_expression(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A changed number inside `when` is judged when the expression keeps its shape."""
    base = (ROOT / "policies" / "default.yaml").read_text()
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(
        base.replace("when: cache.response_time_ms > cache_response_time_ms", "when: cache.response_time_ms > 5")
    )
    new.write_text(
        base.replace("when: cache.response_time_ms > cache_response_time_ms", "when: cache.response_time_ms > 4")
    )
    code, out, _ = run(capsys, "policy", "diff", str(old), str(new))
    assert code == 1
    row = next(line for line in out.splitlines() if ".slow.when" in line)
    assert row.rstrip().endswith("stricter")


def test_diff_judges_a_threshold_inside_arithmetic(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Raising t in `hit_rate < 1 - t` lowers the bound: looser, whatever the operator alone suggests."""
    base = (ROOT / "policies" / "default.yaml").read_text()
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(base)
    new.write_text(base.replace("cache_miss_threshold: 0.05", "cache_miss_threshold: 0.5"))
    code, out, _ = run(capsys, "policy", "diff", str(old), str(new), "--format", "json")
    (change,) = json.loads(out)["changes"]
    assert code == 1
    assert change["path"] == "spec.conditions.cache_performance.thresholds.cache_miss_threshold"
    assert change["effect"] == "looser"


def test_diff_no_change_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """Identical sides: exit 0 and says so."""
    path = str(ROOT / "policies" / "default.yaml")
    code, out, _ = run(capsys, "policy", "diff", path, path)
    assert (code, out.strip()) == (0, "no changes")


def test_diff_reads_git_revisions(tmp_path: Path) -> None:
    """`REV:path` sides are read with git, as in a pull request review."""
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    policy = repo / "policies" / "default.yaml"
    policy.write_text((ROOT / "policies" / "default.yaml").read_text())
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True, env=env)
    subprocess.run([*git, "add", "."], check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True, env=env)
    policy.write_text(policy.read_text().replace("accuracy_threshold: 0.85", "accuracy_threshold: 0.8"))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "abguard"),
            "policy",
            "diff",
            "HEAD:policies/default.yaml",
            "policies/default.yaml",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "accuracy_threshold" in result.stdout
    assert "looser" in result.stdout


def test_diff_unreadable_side_exits_two(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing file is not 'no changes'."""
    code, _, err = run(capsys, "policy", "diff", str(tmp_path / "nope.yaml"), str(ROOT / "policies" / "default.yaml"))
    assert code == 2
    assert "cannot read" in err


@pytest.mark.parametrize(
    ("profile", "env"), [("balanced", None), ("conservative", "dev")], ids=["balanced", "conservative-dev"]
)
def test_compiled_ruleset_matches_golden(capsys: pytest.CaptureFixture[str], profile: str, env: str | None) -> None:
    """The compiled ruleset is what the golden file records (ABGUARD_UPDATE_GOLDEN=1 rewrites it)."""
    argv = ["policy", "compile", "--policies", str(ROOT / "policies"), "--profile", profile] + (
        ["--env", env] if env else []
    )
    code, out, _ = run(capsys, *argv)
    assert code == 0
    golden = GOLDEN / f"ruleset-{profile}{'-' + env if env else ''}.json"
    if os.environ.get("ABGUARD_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert json.loads(out) == json.loads(golden.read_text())


def test_compiled_ruleset_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """One rule per indicator named by its id, pri on every rule, the catch-all last and lowest."""
    _, out, _ = run(capsys, "policy", "compile", "--policies", str(ROOT / "policies"))
    ((name, rules),) = json.loads(out).items()
    assert name.startswith("default-v1-")
    assert all("pri" in rule and rule["run"] == rule_id for rule_id, rule in rules.items())
    assert list(rules)[-1] == "abguard.catch_all"
    assert rules["abguard.catch_all"]["pri"] > max(r["pri"] for k, r in rules.items() if k != "abguard.catch_all")
    assert rules["accuracy.significant_regression"]["pri"] < rules["accuracy.sudden_drop"]["pri"]
    assert len(rules) == 1 + 42


def test_facts_lists_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    """`policy facts` prints every fact with unit and description."""
    code, out, _ = run(capsys, "policy", "facts", "--format", "json")
    facts = json.loads(out)
    assert code == 0
    assert {"name": "errors.rate", "unit": "fraction", "description": "all errors / requests"} in facts


def test_schema_files_are_current() -> None:
    """policies/schema/*.json are exactly what `abguard policy schema --write` produces."""
    for file, text in schema_texts().items():
        assert (ROOT / "policies" / "schema" / file).read_text() == text, (
            f"run: abguard policy schema --write policies/schema ({file})"
        )


def test_every_policy_file_names_its_schema() -> None:
    """Each YAML document starts with the yaml-language-server $schema line editors read."""
    for path in (ROOT / "policies").rglob("*.yaml"):
        if "tests" in path.relative_to(ROOT / "policies").parts:
            continue  # policy test cases are not policy documents
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target.exists(), f"{path}: {target} does not exist"


def test_policy_test_missing_path_exits_two(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`policy test` on a path that does not exist prints one line naming it and exits 2."""
    code, out, err = run(capsys, "policy", "test", str(tmp_path / "nope"))
    assert code == 2
    assert out == ""
    assert err == f"abguard policy test: no such file or folder: {tmp_path / 'nope'}\n"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ((ROOT / "policies" / "default.yaml").read_text(), "", "it needs a top-level `cases:` list (it is a policy"),
        ("", "", "it is empty"),
        ("cases: [\n", ":2", "invalid YAML: "),
        ("- 1\n- 2\n", "", "it needs a top-level `cases:` list"),
        ("cases: 3\n", "", "`cases:` must be a list"),
    ],
    ids=["policy-file", "empty", "invalid-yaml", "a-list", "cases-not-a-list"],
)
def test_policy_test_on_a_file_that_is_not_a_case_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, line: str, reason: str
) -> None:
    """`policy test` on YAML that is not a policy test file prints one line naming it and why, and exits 1."""
    file = tmp_path / "not-cases.yaml"
    file.write_text(text)
    code, out, err = run(capsys, "policy", "test", str(file), "--policies", str(ROOT / "policies"))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"{file}{line}: not a policy test file: {reason}"), err


def test_policy_test_names_a_missing_scenario(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A case whose scenario file does not exist is reported on one line with the case file and the path sought."""
    file = tmp_path / "cases.yaml"
    file.write_text("cases:\n  - name: gone\n    scenario: nope.jsonl\n    expect: {never: [rollback]}\n")
    code, out, err = run(capsys, "policy", "test", str(file), "--policies", str(ROOT / "policies"))
    assert code == 1
    assert out == ""
    assert err == f"{file}: case 1 ('gone'): scenario nope.jsonl does not exist ({tmp_path / 'nope.jsonl'})\n"


def test_policy_test_runs_the_good_files_beside_a_bad_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file that is not a case file does not stop the others: their cases run, and the exit is 1."""
    (tmp_path / "bad.yaml").write_text("")
    good = tmp_path / "good.yaml"
    scenario = ROOT / "scenarios" / "healthy.jsonl"
    good.write_text(f"cases:\n  - name: healthy\n    scenario: {scenario}\n    expect: {{never: [rollback]}}\n")
    code, out, err = run(capsys, "policy", "test", str(tmp_path), "--policies", str(ROOT / "policies"))
    assert code == 1
    assert err == f"{tmp_path / 'bad.yaml'}: not a policy test file: it is empty\n"
    assert out.splitlines()[-1] == "1 passed, 0 failed, 1 file not run"
