"""Hostile states in the real Redis, SQLite and PostgreSQL cost only a rebuild: the same decisions,
no code run, and a `state_rejected` line, count and alert for each (issue 28)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.contract import parse_snapshot
from engine.metrics import Metrics
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.service import Guard, Rollbacks
from engine.state import CHECKPOINT, REDIS, StateCodec, new_key
from engine.store import Checkpoint
from engine.store.postgres import PostgresLog
from engine.store.redis_state import RedisStates
from engine.store.rollbacks import RollbackStore
from engine.store.sqlite import SqliteLog
from tests.support.hostile_states import hostile_blobs, ran
from tests.support.shared import postgres_schema, redis_prefix

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
TEST = "latency-spike"
ROWS = [json.loads(line) for line in (ROOT / "scenarios" / "latency_spike.jsonl").read_text().splitlines()]
SPLIT = 36  # the latency spike is under way: held indicators, a traffic cut, detectors in alarm
NAMES = [
    "crafted-pickle", "truncated", "empty", "bit-flipped", "wrong-layout", "nan", "huge-length",
    "negative-cut", "negative-count", "more-correct-than-labeled", "unknown-indicator", "trailing-bytes",
    "another-tests-blob", "an-earlier-versions-blob", "a-day-ahead", "an-earlier-state-resealed",
]  # fmt: skip


def uninterrupted() -> list[dict[str, Any]]:
    evaluator = Evaluator(POLICY)
    return [json.loads(json.dumps(evaluator.evaluate(parse_snapshot(row)).to_dict())) for row in ROWS]


WANT = uninterrupted()


@pytest.fixture
def stores() -> Iterator[tuple[str, str]]:
    with postgres_schema() as log_url, redis_prefix() as state_url:
        yield log_url, state_url


class Alerts:
    """The alert sink the outbox calls (the real Alertmanager path is in tests/test_alertmanager.py)."""

    def __init__(self) -> None:
        self.rejected: list[tuple[str, str]] = []

    def send(self, alerts: list[dict[str, Any]]) -> None: ...

    def for_decision(self, decision: Any, active: frozenset[Any]) -> tuple[list[dict[str, Any]], frozenset[Any]]:
        return [], active

    def rollback(self, record: Any) -> list[dict[str, Any]]:
        return []

    def overdue(self, record: Any, phase: str, now: float) -> list[dict[str, Any]]:
        return []

    def state_rejected(self, test_id: str, where: str, why: str, now: float) -> list[dict[str, Any]]:
        self.rejected.append((test_id, where))
        return [{"alertname": "AbguardStateRejected", "test_id": test_id}]


def blobs_for(key: bytes, purpose: str, version: int, state: Any, earlier: Any, marker: Path) -> dict[str, bytes]:
    codec = StateCodec(POLICY, key)
    other = codec.dump(purpose, "another-test", version, state)
    old = codec.dump(purpose, TEST, version - 1, earlier)
    blobs = hostile_blobs(key, POLICY, purpose, TEST, version, state, other, old, marker)
    # sealed and valid in itself, but not the state after the log's last decision: a day ahead would
    # refuse every snapshot of the test as out of order; the earlier state would decide on old windows
    blobs["a-day-ahead"] = codec.dump(purpose, TEST, version, replace(state, last_time=state.last_time + 86_400))
    blobs["an-earlier-state-resealed"] = codec.dump(purpose, TEST, version, earlier)
    return blobs


def test_the_hostile_names_are_the_helpers() -> None:
    """Every blob the helper makes is tried against every store below."""
    state = Evaluator(POLICY)
    state.evaluate(parse_snapshot(ROWS[0]))
    held = replace(state.tests[TEST], recent=())
    assert sorted(NAMES) == sorted(blobs_for(b"k" * 32, REDIS, 2, held, held, Path("/nonexistent")))


@pytest.mark.parametrize("name", NAMES)
def test_a_hostile_shared_state_in_redis_costs_only_a_rebuild(
    stores: tuple[str, str], name: str, tmp_path: Path
) -> None:
    """Replica A decides the first part; Redis then holds a hostile entry for the log's current version
    (its version, digest, layout and hash fields left as A wrote them); replica B decides the rest."""
    log_url, state_url = stores
    events: list[dict[str, Any]] = []
    alerts = Alerts()
    a = Guard(POLICY, PostgresLog(log_url), shared=RedisStates(state_url))
    b_rollbacks = Rollbacks(RollbackStore(tmp_path / "rollbacks.sqlite3"), lambda: 0.0, alerts=alerts)
    b = Guard(
        POLICY, PostgresLog(log_url), shared=RedisStates(state_url), on_event=events.append, rollbacks=b_rollbacks
    )
    metrics = Metrics(b)
    shared = RedisStates(state_url)
    client = redis.Redis.from_url(shared.url)
    entry = f"{shared.prefix}:state:{TEST}"
    try:
        got = [a.evaluate(row) for row in ROWS[: SPLIT - 1]]
        earlier = a.states[TEST]
        got.append(a.evaluate(ROWS[SPLIT - 1]))
        version = int(client.hget(entry, "v"))  # type: ignore[arg-type]
        key = PostgresLog(log_url).state_key(new_key)  # what someone who can read the database has
        blob = blobs_for(key, REDIS, version, a.states[TEST], earlier, tmp_path / "pwned")[name]
        client.hset(entry, "s", blob)
        got += [b.evaluate(row) for row in ROWS[SPLIT:]]
    finally:
        a.close()
        b.close()
        client.close()
    assert got == WANT
    assert not ran(tmp_path / "pwned")
    rejected = [e for e in events if e["event"] == "state_rejected"]
    assert [(e["test_id"], e["where"]) for e in rejected] == [(TEST, "redis")]
    assert rejected[0]["why"]
    assert metrics.registry.get_sample_value("abguard_state_rejected_total", {"where": "redis"}) == 1.0
    assert alerts.rejected == [(TEST, "redis")]
    assert b_rollbacks.store.due(1.0), "the alert went into the outbox"


def open_log(kind: str, folder: Path, url: str) -> Any:
    return SqliteLog.in_dir(folder) if kind == "sqlite" else PostgresLog(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def log_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield "sqlite", ""
    else:
        with postgres_schema() as url:
            yield "postgresql", url


@pytest.mark.parametrize("name", NAMES)
def test_a_hostile_checkpoint_costs_only_the_longer_replay(
    log_kind: tuple[str, str], name: str, tmp_path: Path
) -> None:
    """The log's checkpoint of the test is replaced by a hostile one; the restarted service decides
    the rest exactly as one that never stopped."""
    kind, url = log_kind
    data = tmp_path / "data"
    first = Guard(POLICY, open_log(kind, data, url))
    got = [first.evaluate(row) for row in ROWS[: SPLIT - 1]]
    earlier = first.states[TEST]
    got.append(first.evaluate(ROWS[SPLIT - 1]))
    log = first.log
    last = log.last(TEST)
    assert last is not None
    key = log.state_key(new_key)
    blob = blobs_for(key, CHECKPOINT, last.seq, first.states[TEST], earlier, tmp_path / "pwned")[name]
    log.save_checkpoint(Checkpoint(TEST, last.seq, POLICY.digest, StateCodec(POLICY, key).layout, blob))
    first.close()
    events: list[dict[str, Any]] = []
    again = Guard(POLICY, open_log(kind, data, url), on_event=events.append)
    metrics = Metrics(again)
    try:
        got += [again.evaluate(row) for row in ROWS[SPLIT:]]
    finally:
        again.close()
    assert got == WANT
    assert not ran(tmp_path / "pwned")
    rejected = [(e["test_id"], e["where"]) for e in events if e["event"] == "state_rejected"]
    assert rejected == [(TEST, "checkpoint")]
    assert metrics.registry.get_sample_value("abguard_state_rejected_total", {"where": "checkpoint"}) == 1.0


def test_a_valid_checkpoint_and_shared_state_are_used_not_rejected(stores: tuple[str, str], tmp_path: Path) -> None:
    """The checks refuse nothing a replica wrote: the same run with no tampering rejects nothing."""
    log_url, state_url = stores
    events: list[dict[str, Any]] = []
    a = Guard(POLICY, PostgresLog(log_url), shared=RedisStates(state_url), on_event=events.append)
    b = Guard(POLICY, PostgresLog(log_url), shared=RedisStates(state_url), on_event=events.append)
    try:
        got = [(a if index % 2 else b).evaluate(row) for index, row in enumerate(ROWS)]
    finally:
        a.close()
        b.close()
    assert got == WANT
    assert [e for e in events if e["event"] == "state_rejected"] == []


def test_replicas_share_the_key_the_database_keeps(stores: tuple[str, str]) -> None:
    """Without --state-key-file the first replica makes the key and every other one reads the same."""
    log_url, _ = stores
    made = [PostgresLog(log_url).state_key(new_key) for _ in range(3)]
    assert len(set(made)) == 1 and len(made[0]) == 32
