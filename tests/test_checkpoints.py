"""Checkpoints: a restarted service continues a long-running test exactly as the live one would,
from the latest checkpoint of its state, and falls back to the window replay when it cannot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.contract import format_time, parse_snapshot
from engine.pipeline import Engine, Evaluator
from engine.policy import load_effective
from engine.service import Guard
from engine.service.rebuild import CHECKPOINT_EVERY, rebuild_test
from engine.state import StateCodec, new_key
from engine.store import Checkpoint
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
INTERVAL = 120  # two-minute snapshots: 26 hours in 780 of them, and a 5 m window still holds two


def slow_service(count: int) -> list[dict[str, Any]]:
    """A challenger that is fine but a service below the throughput floor for the whole run: one long episode."""
    start = parse_snapshot(snapshot(step=0)).timestamp
    rows = []
    for step in range(count):
        row = snapshot(step=0)
        row["timestamp"] = format_time(start + INTERVAL * step)
        row["interval_seconds"] = INTERVAL
        row["champion"]["requests"] = 2_400_000  # type: ignore[index]  # with the challenger's, 24k rps
        row["challenger"]["requests"] = 480_000  # type: ignore[index]
        rows.append(row)
    return rows


def plain(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return json.loads(json.dumps(decisions))  # type: ignore[no-any-return]


def test_a_restart_after_a_day_long_episode_decides_as_if_nothing_stopped(tmp_path: Path) -> None:
    """An indicator held for 26 h keeps its held time and its traffic episode across a restart."""
    rows = slow_service(790)
    uninterrupted = Evaluator(POLICY)
    want = [uninterrupted.evaluate(parse_snapshot(row)).to_dict() for row in rows]
    first = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    got = [first.evaluate(row) for row in rows[:770]]
    first.close()
    second = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    replayed = second.rebuild()
    got += [second.evaluate(row) for row in rows[770:]]
    second.close()
    assert replayed <= CHECKPOINT_EVERY
    assert plain(got) == plain(want)
    held = [i["held_seconds"] for c in got[-1]["conditions"] for i in c["indicators"] if c["name"] == "throughput"]
    assert max(held) > 86_400


def test_a_checkpoint_of_another_policy_is_not_used(tmp_path: Path) -> None:
    """After a policy change the rebuild replays the window instead of trusting the old policy's state."""
    rows = slow_service(CHECKPOINT_EVERY + 10)
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    for row in rows:
        guard.evaluate(row)
    guard.close()
    other = load_effective([str(ROOT / "policies")], "conservative")
    log = SqliteLog.in_dir(tmp_path)
    key = log.state_key(new_key)
    rebuilt = rebuild_test(Engine.of(other), log, "t1", codec=StateCodec(other, key))
    same = rebuild_test(Engine.of(POLICY), log, "t1", codec=StateCodec(POLICY, key))
    log.close()
    assert not rebuilt.from_checkpoint and rebuilt.state is not None
    assert same.from_checkpoint and same.replayed == 10


@pytest.mark.parametrize("blob", [pytest.param(b"not a state", id="garbage"), pytest.param(b"\x80\x05N.", id="pickle")])
def test_an_unreadable_checkpoint_falls_back_to_the_window_replay(tmp_path: Path, blob: bytes) -> None:
    """A checkpoint of another layout costs the longer replay, never the start."""
    rows = slow_service(40)
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    for row in rows[:30]:
        guard.evaluate(row)
    last = guard.log.last("t1")
    assert last is not None
    guard.log.save_checkpoint(Checkpoint("t1", last.seq, POLICY.digest, 1, blob))
    guard.close()
    again = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    assert again.rebuild() == 30
    after = [again.evaluate(row) for row in rows[30:]]
    again.close()
    uninterrupted = Evaluator(POLICY)
    want = [uninterrupted.evaluate(parse_snapshot(row)).to_dict() for row in rows][30:]
    assert plain(after) == plain(want)


def test_a_restarted_test_does_not_resume_from_its_old_checkpoint(tmp_path: Path) -> None:
    """RestartTest starts the test afresh: a checkpoint of its previous run is not used."""
    rows = slow_service(CHECKPOINT_EVERY + 5)
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    for row in rows:
        guard.evaluate(row)
    guard.restart("t1", "new build")
    guard.close()
    again = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    assert again.rebuild() == 0
    assert "t1" not in again.states
    again.close()


def test_idle_tests_leave_memory_and_come_back_exactly(tmp_path: Path) -> None:
    """A test idle past idle_seconds is checkpointed and dropped from memory; its next call rebuilds
    it from the checkpoint, and its decisions are those of a run that never forgot it."""
    rows = {name: scenario(name) for name in ("accuracy_regression", "latency_spike", "healthy")}
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path / "data"), idle_seconds=0.05)
    decided: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
    for name, stream in rows.items():
        decided[name] += [guard.evaluate(row) for row in stream[:30]]
    time.sleep(0.1)
    decided["healthy"].append(guard.evaluate(rows["healthy"][30]))  # the sweep runs after this call
    test_ids = {name: stream[0]["test_id"] for name, stream in rows.items()}
    assert set(guard.states) == {test_ids["healthy"]}  # the two idle ones left
    assert guard.log.checkpoint(test_ids["accuracy_regression"]) is not None
    views = {name: guard.test(test_id) for name, test_id in test_ids.items()}  # GetTest, the dashboard's list
    assert set(guard.states) == {test_ids["healthy"]}  # reading them brought none back
    assert {name: view.last_decision for name, view in views.items()} == {n: d[-1] for n, d in decided.items()}
    for name, stream in rows.items():
        decided[name] += [guard.evaluate(row) for row in stream[len(decided[name]) :]]
    guard.close()
    for name, stream in rows.items():
        evaluator = Evaluator(POLICY)
        want = [json.loads(json.dumps(evaluator.evaluate(parse_snapshot(row)).to_dict())) for row in stream]
        assert decided[name] == want, name


def scenario(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]
