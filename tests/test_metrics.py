"""The per-test gauges: from the decisions this process made, with no log read and no test loaded
at scrape time, leaving once a test is finished or has not been decided here for a while."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from engine.metrics import STALE_SECONDS, Metrics
from engine.policy import load_effective
from engine.service import Guard
from engine.store.sqlite import SqliteLog

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])


def rows(name: str, test_id: str) -> list[dict[str, Any]]:
    lines = (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()
    return [{**json.loads(line), "test_id": test_id} for line in lines]


def gauges(metrics: Metrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith("abguard_risk_score{")]


def test_a_scrape_reads_no_log_and_loads_no_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    metrics = Metrics(guard)
    try:
        for n in range(3):
            for row in rows("healthy", f"t{n}")[:5]:
                guard.evaluate(row)

        def no(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a scrape read the log or loaded a test")

        for name in ("last", "tests", "count", "last_restart", "version"):
            monkeypatch.setattr(guard.log, name, no)
        monkeypatch.setattr(guard, "_load", no)
        guard._held.clear()  # every test idle and evicted: a scrape must not bring them back
        assert sorted(gauges(metrics)) == [f'abguard_risk_score{{test_id="t{n}"}} 0.0' for n in range(3)]
        assert guard._held == {}
    finally:
        monkeypatch.undo()
        guard.close()


def test_a_test_not_decided_here_for_a_while_leaves_the_gauges(tmp_path: Path) -> None:
    """Stopped, or decided by another replica now: after STALE_SECONDS it is no longer this process's to show."""
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    metrics = Metrics(guard)
    try:
        guard.evaluate(rows("healthy", "old")[0])
        latest = metrics.tests._latest["old"]
        metrics.tests._latest["old"] = latest._replace(seen=time.monotonic() - STALE_SECONDS - 1)
        guard.evaluate(rows("healthy", "new")[0])
        assert gauges(metrics) == ['abguard_risk_score{test_id="new"} 0.0']
        assert set(metrics.tests._latest) == {"new"}  # its memory goes with it
        guard.evaluate(rows("healthy", "old")[1])  # decided here again: back
        assert len(gauges(metrics)) == 2
    finally:
        guard.close()


def test_a_rolled_back_test_stays_while_its_rollback_runs_and_leaves_once_it_is_done(tmp_path: Path) -> None:
    """Without a rollback process there is no record to wait for: a rolled-back test is finished."""
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    metrics = Metrics(guard)
    try:
        decided = [guard.evaluate(row) for row in rows("accuracy_regression", "r")]
        assert decided[-1]["test_status"] == "rolled_back"
        assert gauges(metrics) == []
        guard.evaluate(rows("healthy", "h")[0])
        assert gauges(metrics) == ['abguard_risk_score{test_id="h"} 0.0']
    finally:
        guard.close()
