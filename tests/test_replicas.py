"""Replicas on the real PostgreSQL and Redis: several decide exactly as one would, a killed one
loses nothing acknowledged, and an outage of either store is UNAVAILABLE, never an unstored decision."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine import cli
from engine.api.convert import to_dict
from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.contract import parse_snapshot
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.rollback.process import GATEWAY_STEPS, Rollback, StepState
from engine.service import Guard, Rollbacks
from engine.store import LogWriteError
from engine.store.chain import verify
from engine.store.postgres import PostgresLog
from engine.store.postgres_rollbacks import LEADER_SILENCE, PostgresRollbackStore
from engine.store.redis_state import RedisStates
from engine.store.rollbacks import Work
from tests.support.shared import TcpProxy, postgres_schema, redis_prefix, through

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
SERVING = health_pb2.HealthCheckResponse.SERVING
SCENARIOS = ("accuracy_regression", "latency_spike", "error_storm", "healthy", "confidence_drift")


@pytest.fixture
def stores() -> Iterator[tuple[str, str]]:
    """(--log URL, --state URL) of a fresh schema and key prefix on the real servers."""
    with postgres_schema() as log_url, redis_prefix() as state_url:
        yield log_url, state_url


def scenario(name: str, test_id: str | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]
    return [{**row, "test_id": test_id} for row in rows] if test_id else rows


def replayed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What one uninterrupted evaluator decides, as JSON (the form the log keeps)."""
    evaluator = Evaluator(POLICY)
    return [json.loads(json.dumps(evaluator.evaluate(parse_snapshot(row)).to_dict())) for row in rows]


def replica(
    log_url: str, state_url: str, probe_seconds: float = 0.2, timeout: float = 5.0, rollbacks: Rollbacks | None = None
) -> Guard:
    return Guard(
        POLICY, PostgresLog(log_url, timeout=timeout), shared=RedisStates(state_url, timeout=timeout),
        probe_seconds=probe_seconds, rollbacks=rollbacks,
    )  # fmt: skip


class Flags:
    """A flag provider that notes each call, as the outbox of one replica makes them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def flag_for(self, test_id: str) -> str:
        return f"ff.{test_id}"

    def roll_back(self, flag: str) -> None:
        self.calls.append(("roll_back", flag))

    def set_rollout(self, flag: str, percent: float) -> None:
        self.calls.append(("set_rollout", flag))


def ticked_until(process: Rollbacks, done: Callable[[], bool], seconds: float = 10.0) -> None:
    """The worker's ticks (every 0.5 s in serve) until `done`: a lock freed by a closed session is free
    once PostgreSQL has ended that session's backend, a moment after the close."""
    deadline = time.monotonic() + seconds
    while True:
        process.tick()
        if done():
            return
        assert time.monotonic() < deadline, "the outbox was not taken over"
        time.sleep(0.1)


def test_every_replica_sees_the_rollback_records_and_one_of_them_sends_the_outbox(stores: tuple[str, str]) -> None:
    """A manual rollback asked of one replica: the other replica's next decision of the test is the
    rollback too, both show the same record and take step reports on it, and the flag is rolled back
    once, by whichever replica holds the outbox; when that one stops, the other sends what follows."""
    flags = [Flags(), Flags()]
    records = [PostgresRollbackStore(stores[0]), PostgresRollbackStore(stores[0])]
    processes = [Rollbacks(records[n], time.time, flags[n]) for n in range(2)]
    first, second = (replica(*stores, rollbacks=processes[n]) for n in range(2))
    rows = scenario("healthy")
    try:
        decided = [first.evaluate(row) for row in rows[:10]] + [second.evaluate(row) for row in rows[10:20]]
        assert decided == replayed(rows[:20])
        assert {d["action"] for d in decided} == {"continue"}
        record = first.rollback("healthy", "customer complaints", "alice@example.com")
        assert second.get_rollback("healthy", "").rollback_id == record.rollback_id
        assert [r.rollback_id for r in second.list_rollbacks("", 10)] == [record.rollback_id]
        after = second.evaluate(rows[20])  # second held the test at the version before the rollback
        assert (after["action"], after["triggered_by"]) == ("rollback", "rolled_back_test")
        assert second.rollback("healthy", "again", "bob").rollback_id == record.rollback_id  # one record
        second.report_step("healthy", record.rollback_id, "traffic_cutoff", "done", "gateway drained")
        shown = first.get_rollback("healthy", record.rollback_id)
        assert [s.state for s in shown.steps if s.name == "traffic_cutoff"] == [StepState.DONE]

        for process in processes:
            process.tick()
            process.tick()
        assert sorted(len(f.calls) for f in flags) == [0, 1]  # sent once, by one replica
        leader = 0 if flags[0].calls else 1
        assert flags[leader].calls == [("roll_back", "ff.healthy")]
        assert records[leader].leads() and not records[1 - leader].leads()

        records[leader].close()  # the sending replica stops: its session, and the outbox lock, end with it
        records[1 - leader].enqueue("other", [Work("flag_rollback", {"flag": "ff.other"}, "manual:other")], time.time())
        ticked_until(processes[1 - leader], lambda: bool(flags[1 - leader].calls))
        assert flags[1 - leader].calls == [("roll_back", "ff.other")]
    finally:
        first.close()
        second.close()
        for store in records:
            store.close()


def test_audit_export_reads_the_shared_log_and_its_rollback_records(
    stores: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`abguard audit export --log URL`: the automatic rollback with its chain hash, and the manual one."""
    guard = replica(*stores, rollbacks=Rollbacks(PostgresRollbackStore(stores[0]), time.time))
    try:
        for row in scenario("accuracy_regression"):
            if guard.evaluate(row)["action"] == "immediate_rollback":
                break
        healthy = scenario("healthy")
        guard.evaluate(healthy[0])
        guard.rollback("healthy", "customer complaints", "alice@example.com")
    finally:
        assert guard.rollbacks is not None
        guard.rollbacks.store.close()
        guard.close()
    assert cli.main(["audit", "export", "--log", stores[0]]) == 0
    rows = json.loads(capsys.readouterr().out)["records"]
    by_test = {row["test_id"]: row for row in rows}
    assert set(by_test) == {"accuracy-regression", "healthy"}
    automatic, manual = by_test["accuracy-regression"], by_test["healthy"]
    assert (
        automatic["hash"] and automatic["triggered_by"] != "manual_rollback" and automatic["requested_by"] == "abguard"
    )
    assert (manual["triggered_by"], manual["requested_by"], manual["hash"]) == (
        "manual_rollback",
        "alice@example.com",
        None,
    )


def test_a_restart_on_one_replica_starts_the_new_run_on_every_replica(stores: tuple[str, str]) -> None:
    """RestartTest through one replica: the other, holding the old run in memory, decides the next
    snapshot as the first of a new run (the restart bumped the test's version, so it reloads)."""
    first, second = replica(*stores), replica(*stores)
    rows = scenario("accuracy_regression")
    try:
        decided = [second.evaluate(row) for row in rows[:45]]
        assert decided[-1]["action"] != "continue"  # the old run had found the regression
        first.restart("accuracy-regression", "fixed")
        assert second.evaluate(rows[45]) == replayed(rows[45:46])[0]
    finally:
        first.close()
        second.close()


def test_the_outbox_sender_rides_out_a_postgresql_outage(stores: tuple[str, str]) -> None:
    """PostgreSQL cut: a write is refused as a LogWriteError naming the store, the worker's tick
    survives and sends nothing, and the replica is no longer the sender; once PostgreSQL is back
    writes work again within seconds (the pool reconnects) and the worker takes the outbox again."""
    proxy = TcpProxy(stores[0])
    store = PostgresRollbackStore(through(stores[0], proxy), timeout=2.0)
    flags = Flags()
    process = Rollbacks(store, time.time, flags)
    try:
        store.enqueue("t", [Work("flag_rollback", {"flag": "ff.before"}, "before")], time.time())
        process.tick()
        assert flags.calls == [("roll_back", "ff.before")] and store.leads()
        proxy.cut()
        with pytest.raises(LogWriteError, match="rollback records"):
            store.enqueue("t", [Work("flag_rollback", {"flag": "ff.lost"}, "lost")], time.time())
        process.tick()
        assert not store.leads() and flags.calls == [("roll_back", "ff.before")]
        proxy.mend()
        deadline = time.monotonic() + 15
        while True:  # as a caller retries a retryable error
            try:
                store.enqueue("t", [Work("flag_rollback", {"flag": "ff.after"}, "after")], time.time())
                break
            except LogWriteError:
                assert time.monotonic() < deadline, "the rollback records did not come back"
                time.sleep(0.2)
        # the old session's lock ends with its backend: at once, or after LEADER_SILENCE when the
        # server never heard the cut (seen with this proxy, as with a network partition)
        ticked_until(process, lambda: len(flags.calls) == 2, seconds=LEADER_SILENCE + 10)
        assert flags.calls == [("roll_back", "ff.before"), ("roll_back", "ff.after")] and store.leads()
    finally:
        store.close()
        proxy.close()


def test_concurrent_changes_of_one_record_from_two_replicas_are_all_kept(stores: tuple[str, str]) -> None:
    """Two replicas report different gateway steps of one record at once, many times over: each
    read-modify-write holds the test's lock, so no report overwrites another."""
    records = [PostgresRollbackStore(stores[0]), PostgresRollbackStore(stores[0])]
    try:
        for n in range(6):
            opened = Rollback.open(f"r{n}", "t", 100.0, "2026-11-24T09:20:30Z", "manual_rollback", "why", "op", "d")
            assert records[0].open(opened, [], 100.0)
            assert not records[1].open(opened, [], 100.0)  # the same record twice: kept once
            barrier = threading.Barrier(len(GATEWAY_STEPS))

            def report(
                step: str, store: PostgresRollbackStore, rollback_id: str = opened.rollback_id, barrier: Any = barrier
            ) -> None:
                def change(record: Rollback) -> tuple[Rollback, list[Work]]:
                    return record.reported(step, "done", 101.0, ""), []

                barrier.wait()
                store.update(rollback_id, change, 101.0)

            threads = [
                threading.Thread(target=report, args=(step, records[i % 2]))
                for i, step in enumerate(sorted(GATEWAY_STEPS))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            stored = records[1].get(opened.rollback_id)
            assert stored is not None
            assert {s.name for s in stored.steps if s.state == StepState.DONE} >= set(GATEWAY_STEPS)
    finally:
        for store in records:
            store.close()


def test_two_replicas_fed_interleaved_streams_concurrently_decide_as_one_replay(stores: tuple[str, str]) -> None:
    """Ten tests stream at once, each snapshot to a random replica, with resends to the other one:
    every decision is the single replay's, each snapshot is logged once, and the chain is intact."""
    replicas = [replica(*stores), replica(*stores)]
    streams = {f"{name}-{copy}": scenario(name, f"{name}-{copy}") for name in SCENARIOS for copy in range(2)}
    got: dict[str, list[dict[str, Any]]] = {test_id: [] for test_id in streams}
    problems: list[str] = []

    def feed(test_id: str, seed: int) -> None:
        rng = random.Random(seed)
        rows = streams[test_id]
        try:
            for index, row in enumerate(rows):
                which = rng.randrange(2)
                got[test_id].append(replicas[which].evaluate(row))
                if rng.random() < 0.2:  # a resend of an earlier snapshot reaches the other replica
                    earlier = rng.randrange(index + 1)
                    if replicas[1 - which].evaluate(rows[earlier]) != got[test_id][earlier]:
                        problems.append(f"{test_id}: the resend of snapshot {earlier} got another answer")
        except Exception as error:
            problems.append(f"{test_id}: {error!r}")

    threads = [threading.Thread(target=feed, args=(test_id, n)) for n, test_id in enumerate(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert problems == []
        for test_id, rows in streams.items():
            assert got[test_id] == replayed(rows), test_id
        log = replicas[0].log
        assert isinstance(log, PostgresLog)
        assert {test_id: log.count(test_id) for test_id in streams} == {t: len(r) for t, r in streams.items()}
        verdict = verify(log.chain_rows(), log.chain_links(), log.chain_counter())
        assert verdict.broken is None and verdict.records == sum(len(rows) for rows in streams.values())
    finally:
        for guard in replicas:
            guard.close()


def test_a_replica_takes_over_a_test_from_the_shared_state_without_replaying_the_log(stores: tuple[str, str]) -> None:
    """The second replica's first call for a test the first one decided reads the state from Redis."""
    first, second = replica(*stores), replica(*stores)
    rows = scenario("accuracy_regression")
    try:
        decided = [first.evaluate(row) for row in rows[:30]]

        def no_replay(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the log was replayed although Redis had the state")

        second.log.after = no_replay  # type: ignore[method-assign]
        second.log.since_restart = no_replay  # type: ignore[method-assign]
        decided += [second.evaluate(row) for row in rows[30:]]
        assert decided == replayed(rows)
    finally:
        first.close()
        second.close()


def test_a_state_written_for_a_commit_that_failed_is_not_used(stores: tuple[str, str]) -> None:
    """Redis took a state but the log did not commit: the other replica rebuilds from the log instead."""
    first, second = replica(*stores), replica(*stores)
    rows = scenario("accuracy_regression")
    try:
        decided = [first.evaluate(row) for row in rows[:45]]
        log = first.log
        assert isinstance(log, PostgresLog)
        real_finish = log._finish

        def failing_finish(opened: Any) -> None:
            real_finish(opened)
            raise LogWriteError("the commit failed")

        log._finish = failing_finish  # type: ignore[method-assign]
        with pytest.raises(LogWriteError):
            first.evaluate(rows[45])  # its state went to Redis, the log kept nothing
        assert log.find("accuracy-regression", parse_snapshot(rows[45]).timestamp) is None
        other = [{**rows[45], "rollout_percent": 0}, *rows[46:]]  # the client moved on with another snapshot
        decided += [second.evaluate(row) for row in other]
        assert decided == replayed(rows[:45] + other)
    finally:
        first.close()
        second.close()


def serve(tmp: Path, log_url: str, state_url: str) -> tuple[subprocess.Popen[str], str]:
    abguard = str(Path(sys.executable).parent / "abguard")
    command = [
        abguard, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp), "--policies", str(ROOT / "policies"),
        "--log", log_url, "--state", state_url,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())
    assert started["event"] == "serving", started
    return process, started["listen"]


def call(address: str, row: dict[str, Any]) -> dict[str, Any]:
    with grpc.insecure_channel(address) as channel:
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))
        return to_dict(rpc.RiskServiceStub(channel).Evaluate(request, timeout=10).decision)


def test_killing_a_replica_mid_stream_loses_no_acknowledged_decision(tmp_path: Path, stores: tuple[str, str]) -> None:
    """`abguard serve` twice on one PostgreSQL and Redis; SIGKILL the first mid-stream: the second takes
    the test over, answers the resend of the last acknowledged snapshot from the log, and decides the
    rest as one replay would."""
    first, first_address = serve(tmp_path / "a", *stores)
    second, second_address = serve(tmp_path / "b", *stores)
    rows = scenario("accuracy_regression")
    try:
        acknowledged = [call(first_address, row) for row in rows[:41]]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert call(second_address, rows[40]) == acknowledged[40]
        rest = [call(second_address, row) for row in rows[41:]]
        assert acknowledged + rest == replayed(rows)
        log = PostgresLog(stores[0], pool_size=1)
        try:
            assert log.count("accuracy-regression") == len(rows)
        finally:
            log.close()
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)


@pytest.mark.parametrize("broken", ["postgresql", "redis"])
def test_an_outage_is_unavailable_and_not_serving_then_recovers(stores: tuple[str, str], broken: str) -> None:
    """Cut PostgreSQL or Redis under a served replica: Evaluate is UNAVAILABLE, health NOT_SERVING and
    the log keeps nothing of the refused snapshot; mend it: SERVING again, and the retry decides it
    exactly as an uninterrupted run."""
    log_url, state_url = stores
    proxy = TcpProxy(log_url if broken == "postgresql" else state_url.split("?")[0])
    if broken == "postgresql":
        log_url = through(log_url, proxy)
    else:
        state_url = through(state_url, proxy)
    guard = replica(log_url, state_url, probe_seconds=0.2, timeout=1.0)
    server, port, _ = create_server(guard, "127.0.0.1:0", 4)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub, health = rpc.RiskServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    rows = scenario("latency_spike")

    def evaluate(row: dict[str, Any]) -> dict[str, Any]:
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))
        return to_dict(stub.Evaluate(request, timeout=15).decision)

    try:
        decided = [evaluate(row) for row in rows[:20]]
        proxy.cut()
        with pytest.raises(grpc.RpcError) as refused:
            evaluate(rows[20])
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != SERVING
        assert not guard.serving
        proxy.mend()
        deadline = time.monotonic() + 20
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != SERVING:
            assert time.monotonic() < deadline, "not SERVING again after the outage ended"
            time.sleep(0.1)
        decided += [evaluate(row) for row in rows[20:]]
        assert decided == replayed(rows)
        log = PostgresLog(stores[0], pool_size=1)
        try:
            assert log.count("latency-spike") == len(rows)  # the refused snapshot was logged once, on its retry
        finally:
            log.close()
    finally:
        channel.close()
        server.stop(2).wait()
        guard.close()
        proxy.close()


def test_serve_processes_share_the_port_and_a_dead_one_is_started_again(
    tmp_path: Path, stores: tuple[str, str]
) -> None:
    """`serve --processes 2` on the shared stores: connections spread over both (each call here opens its
    own), decisions are one replay's; SIGKILL one process and the supervisor starts it again."""
    abguard = str(Path(sys.executable).parent / "abguard")
    command = [
        abguard, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        "--policies", str(ROOT / "policies"), "--log", stores[0], "--state", stores[1], "--processes", "2",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    supervising = json.loads(process.stdout.readline())
    assert supervising["event"] == "supervising" and len(supervising["pids"]) == 2
    address = supervising["listen"]
    events: list[dict[str, Any]] = []

    def wait_for(event: str, count: int) -> None:
        assert process.stdout is not None
        while sum(1 for e in events if e["event"] == event) < count:
            events.append(json.loads(process.stdout.readline()))

    rows = interleaved_rows()
    try:
        wait_for("ready", 2)
        decided = [call(address, row) for row in rows[:60]]
        os.kill(supervising["pids"][1], signal.SIGKILL)
        wait_for("process_exited", 1)
        wait_for("ready", 3)
        decided += [call(address, row) for row in rows[60:]]
        for test_id in {row["test_id"] for row in rows}:
            want = replayed([row for row in rows if row["test_id"] == test_id])
            assert [d for d in decided if d["test_id"] == test_id] == want, test_id
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"event": "stopped", "processes": 2, "exit_codes": [0, 0]}


def interleaved_rows() -> list[dict[str, Any]]:
    streams = [scenario(name) for name in ("accuracy_regression", "error_storm")]
    return [row for pair in zip(*streams, strict=False) for row in pair]


def test_the_log_is_named_without_its_password_and_with_its_schema() -> None:
    """What serve's `serving` line and every error show: two deployments in one database are told apart."""
    from engine.store.postgres import safe_url

    shown = safe_url("postgresql://abguard:s3cret@db:5433/prod?options=-csearch_path%3Dteam_a")
    assert shown == "postgresql://abguard@db:5433/prod (options -csearch_path=team_a)"
    assert "s3cret" not in safe_url("postgresql://abguard:s3cret@db/prod")
