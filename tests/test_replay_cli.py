"""`abguard replay` as a user runs it: JSON lines in, one decision per line out, bad lines reported."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from engine.cli import main
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")
    return path


def test_replay_writes_one_decision_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Every input line gives a JSON decision with the contract's fields."""
    code = main(
        ["replay", "--input", str(ROOT / "scenarios" / "latency_spike.jsonl"), "--policies", str(ROOT / "policies")]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 60
    decision = json.loads(out[-1])
    assert set(decision) == {
        "decision_id",
        "test_id",
        "timestamp",
        "action",
        "confidence",
        "reason",
        "triggered_by",
        "risk_score",
        "risk_level",
        "conditions",
        "target_rollout_percent",
        "actions",
        "enforced",
        "policy",
        "test_status",
        "label_lag_seconds",  # added compatibly (issue 26)
    }
    assert decision["action"] == "rollback"
    condition = decision["conditions"][1]
    assert {"name", "status", "severity", "weight", "contribution", "indicators"} <= set(condition)
    assert {"observed", "threshold", "held_seconds"} <= set(condition["indicators"][0])


def test_bad_lines_are_reported_and_the_rest_decided(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid JSON, unknown field, NaN, negative count, correct > labeled, missing arm: each named, exit 1."""
    good = [snapshot(step=s) for s in range(8)]
    unknown = snapshot(step=3, latncy_ms=1)
    negative = snapshot(step=4, requests=-1)
    too_correct = snapshot(step=5, labeled=10, correct=11)
    missing = snapshot(step=6)
    del missing["challenger"]
    nan = snapshot(step=7, cpu_utilization=math.nan)
    rows: list[object] = [
        good[0],
        "{not json",
        unknown,
        good[1],
        negative,
        too_correct,
        missing,
        json.dumps(nan),
        good[2],
    ]
    source = write_lines(tmp_path / "in.jsonl", rows)
    code = main(["replay", "--input", str(source), "--policies", str(ROOT / "policies")])
    captured = capsys.readouterr()
    assert code == 1
    assert len(captured.out.splitlines()) == 3
    errors = captured.err.splitlines()
    assert errors[0].startswith("line 2: $: invalid JSON")
    assert errors[1].startswith("line 3: challenger.latncy_ms: unknown field")
    assert errors[2].startswith("line 5: challenger.requests: must be >= 0")
    assert errors[3].startswith("line 6: challenger.correct: 11 correct is more than 10 labeled")
    assert errors[4].startswith("line 7: challenger: required")
    assert errors[5].startswith("line 8: challenger.cpu_utilization: must be a finite number")
    assert errors[-1] == "6 lines rejected"


def test_replay_reads_stdin_and_prints_a_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--input -` reads standard input; `--format table` prints a readable timeline."""
    text = (ROOT / "scenarios" / "error_storm.jsonl").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code = main(["replay", "--input", "-", "--format", "table", "--policies", str(ROOT / "policies")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split()[:6] == ["TIME", "TEST", "ACTION", "SCORE", "LEVEL", "TRAFFIC"]
    rollback = next(line for line in out if "immediate_rollback" in line)
    assert "error_rate.error_storm" in rollback
    assert " 0% " in rollback


def test_replay_with_env_and_profile(capsys: pytest.CaptureFixture[str]) -> None:
    """--env dev marks every decision advisory (enforced false)."""
    code = main(
        [
            "replay",
            "--input",
            str(ROOT / "scenarios" / "error_storm.jsonl"),
            "--env",
            "dev",
            "--profile",
            "conservative",
            "--policies",
            str(ROOT / "policies"),
        ]
    )
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert all(d["enforced"] is False for d in decisions)
    assert decisions[-1]["test_status"] == "running"


def test_replay_missing_input_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read exits 2 and says why."""
    code = main(["replay", "--input", str(tmp_path / "none.jsonl"), "--policies", str(ROOT / "policies")])
    assert code == 2
    assert "cannot read" in capsys.readouterr().err


def test_replay_out_of_order_line_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A snapshot older than its test's last is rejected with the field; other tests go on."""
    rows: list[object] = [snapshot(step=5), snapshot(step=2), snapshot("t2", step=1), snapshot(step=6)]
    code = main(
        ["replay", "--input", str(write_lines(tmp_path / "in.jsonl", rows)), "--policies", str(ROOT / "policies")]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert len(captured.out.splitlines()) == 3
    assert captured.err.startswith("line 2: timestamp: 2026-11-24T09:01:30Z is older than test 't1'")
