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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.api.convert import to_dict
from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.contract import parse_snapshot
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.service import Guard
from engine.store import LogWriteError
from engine.store.chain import verify
from engine.store.postgres import PostgresLog
from engine.store.redis_state import RedisStates
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


def replica(log_url: str, state_url: str, probe_seconds: float = 0.2, timeout: float = 5.0) -> Guard:
    return Guard(
        POLICY, PostgresLog(log_url, timeout=timeout), shared=RedisStates(state_url, timeout=timeout),
        probe_seconds=probe_seconds,
    )  # fmt: skip


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
