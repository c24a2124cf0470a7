"""The gRPC service with a real server on port 0 and a real client: every RPC and error code."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from engine.api.convert import to_dict
from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.contract import parse_snapshot
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.service import Guard
from engine.store import LogError, LogWriteError
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent
SERVING = health_pb2.HealthCheckResponse.SERVING
POLICY = load_effective([str(ROOT / "policies")])


class Service:
    """A running server over a data dir, and a stub to call it."""

    def __init__(self, data_dir: Path) -> None:
        self.guard = Guard(POLICY, SqliteLog.in_dir(data_dir))
        self.rebuilt = self.guard.rebuild()
        self.lines: list[dict[str, Any]] = []
        self.server, self.port, _ = create_server(self.guard, "127.0.0.1:0", 8, self.lines.append)
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = rpc.RiskServiceStub(self.channel)

    def evaluate(self, row: dict[str, Any]) -> pb.Decision:
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))
        return cast(pb.Decision, self.stub.Evaluate(request, timeout=10).decision)  # the stub is untyped

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(5).wait()
        self.guard.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "data")
    yield running
    running.stop()


def scenario(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]


def violation(error: grpc.RpcError) -> tuple[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return bad.field_violations[0].field, bad.field_violations[0].description


def test_evaluate_returns_the_decision_replay_gives(service: Service) -> None:
    """Evaluate answers with the contract's fields, equal to `abguard replay`'s line for the same input."""
    rows = scenario("latency_spike")
    local = Evaluator(POLICY)
    for row in rows:
        got = to_dict(service.evaluate(row))
        want = local.evaluate(parse_snapshot(row)).to_dict()
        assert got == json.loads(json.dumps(want))
    assert got["action"] == "rollback"
    assert service.lines[-1]["event"] == "decision"
    assert set(service.lines[-1]) == {
        "event",
        "decision_id",
        "test_id",
        "timestamp",
        "action",
        "risk_score",
        "latency_ms",
    }


def test_resent_snapshot_returns_the_recorded_decision(service: Service) -> None:
    """The same test and timestamp again: the same decision, nothing counted twice."""
    first = service.evaluate(snapshot(step=0))
    service.evaluate(snapshot(step=1))
    again = service.evaluate(snapshot(step=0, requests=1))
    assert again == first
    listed = service.stub.ListDecisions(pb.ListDecisionsRequest(test_id="t1"))
    assert len(listed.decisions) == 2


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"requests": -1}, "snapshot.challenger.requests", "challenger.requests: must be >= 0, got -1"),
        ({"labeled": 10, "correct": 11}, "snapshot.challenger.correct", "11 correct is more than 10 labeled"),
        ({"cpu_utilization": 1.5}, "snapshot.challenger.cpu_utilization", "must be within 0..1"),
        ({"confidence_histogram": [1, 2]}, "snapshot.challenger.confidence_histogram", "needs 10 counts"),
    ],
    ids=["negative-requests", "correct-over-labeled", "cpu-above-one", "short-histogram"],
)
def test_bad_snapshot_is_invalid_argument_naming_the_field(
    service: Service, overrides: dict[str, Any], field: str, text: str
) -> None:
    """INVALID_ARGUMENT with a google.rpc.BadRequest field violation naming the field."""
    with pytest.raises(grpc.RpcError) as raised:
        service.evaluate(snapshot(step=0, **overrides))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in raised.value.details()
    assert violation(raised.value)[0] == field


def test_missing_parts_are_invalid_argument(service: Service) -> None:
    """No snapshot, no test_id, no challenger: each refused by name."""
    with pytest.raises(grpc.RpcError) as raised:
        service.stub.Evaluate(pb.EvaluateRequest(), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    row = snapshot(step=0)
    del row["challenger"]
    with pytest.raises(grpc.RpcError) as raised:
        service.evaluate(row)
    assert violation(raised.value)[0] == "snapshot.challenger"


def test_older_timestamp_is_failed_precondition(service: Service) -> None:
    """Windows only move forward."""
    service.evaluate(snapshot(step=5))
    with pytest.raises(grpc.RpcError) as raised:
        service.evaluate(snapshot(step=2))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert violation(raised.value)[0] == "snapshot.timestamp"


def test_unknown_test_is_not_found(service: Service) -> None:
    """GetTest, ListDecisions and RestartTest of a test never seen: NOT_FOUND."""
    calls: tuple[Callable[[], object], ...] = (
        lambda: service.stub.GetTest(pb.GetTestRequest(test_id="nope"), timeout=5),
        lambda: service.stub.ListDecisions(pb.ListDecisionsRequest(test_id="nope"), timeout=5),
        lambda: service.stub.RestartTest(pb.RestartTestRequest(test_id="nope", reason="x"), timeout=5),
    )
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_test_and_restart(service: Service) -> None:
    """A rolled-back test reports traffic 0 until RestartTest, which needs a reason and is recorded."""
    for row in scenario("error_storm"):
        service.evaluate(row)
    view = service.stub.GetTest(pb.GetTestRequest(test_id="error-storm"), timeout=5)
    assert view.test_status == pb.TEST_STATUS_ROLLED_BACK
    assert view.target_rollout_percent == 0
    assert view.rolled_back_at.startswith("2026-11-24T09:2")
    assert view.policy.digest == POLICY.digest
    assert view.decisions == 60
    with pytest.raises(grpc.RpcError) as raised:
        service.stub.RestartTest(pb.RestartTestRequest(test_id="error-storm"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    restarted = service.stub.RestartTest(pb.RestartTestRequest(test_id="error-storm", reason="fixed in v2"), timeout=5)
    assert restarted.test_status == pb.TEST_STATUS_RUNNING
    assert service.guard.log.last_restart("error-storm").reason == "fixed in v2"  # type: ignore[union-attr]
    after = service.evaluate({**scenario("healthy")[0], "test_id": "error-storm", "timestamp": "2026-11-24T10:00:00Z"})
    assert after.action == pb.ACTION_CONTINUE
    assert after.test_status == pb.TEST_STATUS_RUNNING


def test_list_decisions_newest_first_in_pages(service: Service) -> None:
    """Pages of decisions, newest first, with a token for the next page."""
    for step in range(7):
        service.evaluate(snapshot(step=step))
    first = service.stub.ListDecisions(pb.ListDecisionsRequest(test_id="t1", page_size=3), timeout=5)
    second = service.stub.ListDecisions(
        pb.ListDecisionsRequest(test_id="t1", page_size=3, page_token=first.next_page_token), timeout=5
    )
    third = service.stub.ListDecisions(
        pb.ListDecisionsRequest(test_id="t1", page_size=3, page_token=second.next_page_token), timeout=5
    )
    times = [d.timestamp for page in (first, second, third) for d in page.decisions]
    assert times == sorted(times, reverse=True)
    assert len(times) == 7
    assert third.next_page_token == ""
    with pytest.raises(grpc.RpcError) as raised:
        service.stub.ListDecisions(pb.ListDecisionsRequest(test_id="t1", page_token="garbage!"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watch_streams_decisions_as_they_are_made(service: Service) -> None:
    """A watcher filtered to one test and to rollbacks gets exactly those decisions."""
    received: list[pb.Decision] = []
    stream = service.stub.WatchDecisions(
        pb.WatchDecisionsRequest(test_ids=["error-storm"], actions=[pb.ACTION_IMMEDIATE_ROLLBACK])
    )

    def read() -> None:
        try:
            for decision in stream:
                received.append(decision)
        except grpc.RpcError as error:  # the cancel below ends the stream
            assert error.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 5
    while not service.guard.watchers._watchers and time.monotonic() < deadline:
        time.sleep(0.01)
    for row in scenario("healthy")[:5] + scenario("error_storm"):
        service.evaluate(row)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.cancel()
    reader.join(5)
    assert [d.action for d in received] == [pb.ACTION_IMMEDIATE_ROLLBACK]
    assert received[0].test_id == "error-storm"


def test_health_and_reflection(service: Service) -> None:
    """Health says SERVING; reflection lists and describes the service (what grpcurl uses)."""
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "abguard.v1.RiskService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    database = ProtoReflectionDescriptorDatabase(service.channel)
    assert "abguard.v1.RiskService" in database.get_services()
    described = database.FindFileContainingSymbol("abguard.v1.RiskService")
    assert {m.name for m in described.service[0].method} == {
        "Evaluate",
        "GetTest",
        "RestartTest",
        "ListDecisions",
        "WatchDecisions",
        "GetRollback",
        "ListRollbacks",
        "ReportRollbackStep",
        "RollbackTest",
        "EvaluateBatch",
        "EvaluateStream",
        "GetPolicy",
        "ReloadPolicy",
    }


def test_concurrent_callers_get_serial_answers(service: Service) -> None:
    """Eight callers on different tests at once: each test's decisions equal a serial replay."""
    names = ["healthy", "error_storm", "latency_spike", "accuracy_regression"]
    streams = {
        f"{name}-{copy}": [{**row, "test_id": f"{name}-{copy}"} for row in scenario(name)[:40]]
        for name in names
        for copy in range(2)
    }
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def call(test_id: str) -> None:
        try:
            results[test_id] = [
                service.evaluate(row).decision_id + service.evaluate(row).reason for row in streams[test_id]
            ]
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=call, args=(test_id,)) for test_id in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    for test_id, rows in streams.items():
        local = Evaluator(POLICY)
        assert results[test_id] == [(d := local.evaluate(parse_snapshot(row))).decision_id + d.reason for row in rows]


def test_restart_keeps_decisions_status_and_windows(tmp_path: Path) -> None:
    """After the service restarts: resent snapshots get recorded decisions, a rolled-back test
    stays rolled back, and the next snapshot is decided as if nothing had stopped."""
    rows = scenario("sustained_medium_risk")
    storm = scenario("error_storm")
    first = Service(tmp_path / "data")
    recorded = [first.evaluate(row) for row in rows[:50]]
    for row in storm:
        first.evaluate(row)
    first.stop()

    second = Service(tmp_path / "data")
    try:
        assert second.rebuilt > 0
        assert second.evaluate(rows[10]) == recorded[10]
        view = second.stub.GetTest(pb.GetTestRequest(test_id="error-storm"), timeout=5)
        assert view.test_status == pb.TEST_STATUS_ROLLED_BACK
        after = second.evaluate({**storm[-1], "timestamp": "2026-11-24T09:31:00Z"})
        assert after.action == pb.ACTION_ROLLBACK and after.target_rollout_percent == 0
        uninterrupted = Evaluator(POLICY)
        for row in rows[:50]:
            uninterrupted.evaluate(parse_snapshot(row))
        for row in rows[50:60]:
            want = uninterrupted.evaluate(parse_snapshot(row)).to_dict()
            assert to_dict(second.evaluate(row)) == json.loads(json.dumps(want))
        evidence = second.guard.log.evidence("error-storm")
        assert len(evidence) == 1
        assert {"trigger_reason", "risk_conditions", "performance_impact", "recovery_time"} <= set(evidence[0])
        assert evidence[0]["risk_conditions"][0]["name"] == "error_rate"
    finally:
        second.stop()


def start_serve(data_dir: Path, ready: bool = True) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`abguard serve` as a real process on a free port; its first log line says where.

    With `ready`, return once health says SERVING (the state is rebuilt after the port opens)."""
    abguard = str(Path(sys.executable).parent / "abguard")
    command = [
        abguard,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--policies",
        str(ROOT / "policies"),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())
    if ready and started.get("event") == "serving":
        with grpc.insecure_channel(started["listen"]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != SERVING:
                assert time.monotonic() < deadline, "abguard serve did not become ready"
                time.sleep(0.02)
    return process, started


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    """`abguard serve` stops on SIGTERM: in-flight calls finish, the log holds every answered decision, exit 0."""
    process, started = start_serve(tmp_path / "data")
    assert started["event"] == "serving"
    channel = grpc.insecure_channel(started["listen"])
    stub = rpc.RiskServiceStub(channel)
    answered: list[str] = []
    failures: list[grpc.StatusCode] = []

    def hammer() -> None:
        for row in scenario("healthy") + scenario("error_storm"):
            try:
                request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))
                answered.append(stub.Evaluate(request, timeout=5).decision.decision_id)
            except grpc.RpcError as error:
                failures.append(error.code())

    caller = threading.Thread(target=hammer)
    caller.start()
    while len(answered) < 20:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    caller.join(30)
    out, err = process.communicate(timeout=30)
    channel.close()
    assert process.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert "stopping" in events and events[-1] == "stopped", events[-3:]
    # calls that arrive during the shutdown are refused (a retry is safe: resends are deduplicated)
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, failures
    log = SqliteLog.in_dir(tmp_path / "data")
    stored = {r.decision["decision_id"] for t in log.tests() for r in log.page(t, 1000, None)}
    log.close()
    assert set(answered) <= stored


def test_field_names_follow_each_request(service: Service) -> None:
    """INVALID_ARGUMENT names the field of the request that was sent, not always a snapshot's."""
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: service.stub.Evaluate(pb.EvaluateRequest(), timeout=5), "snapshot"),
        (lambda: service.stub.GetTest(pb.GetTestRequest(test_id=""), timeout=5), "test_id"),
        (lambda: service.stub.RestartTest(pb.RestartTestRequest(test_id="t1"), timeout=5), "reason"),
        (
            lambda: service.stub.ListDecisions(pb.ListDecisionsRequest(test_id="t1", page_size=-1), timeout=5),
            "page_size",
        ),
    ]
    service.evaluate(snapshot(step=0))
    for call, field in cases:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation(raised.value)[0] == field


def test_page_token_out_of_range_is_invalid_argument(service: Service) -> None:
    """A forged cursor too large for the log is refused by name, not an INTERNAL overflow."""
    import base64

    service.evaluate(snapshot(step=0))
    token = base64.urlsafe_b64encode(b"99999999999999999999999").decode()
    with pytest.raises(grpc.RpcError) as raised:
        service.stub.ListDecisions(pb.ListDecisionsRequest(test_id="t1", page_token=token), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation(raised.value)[0] == "page_token"


def test_watch_with_unknown_action_is_invalid_argument(service: Service) -> None:
    """An action number outside the enum is refused, never UNKNOWN."""
    # (the generated stub accepts only Action values: the cast lets the test send what it must not)
    stream = service.stub.WatchDecisions(pb.WatchDecisionsRequest(actions=[cast(pb.Action, 42)]), timeout=5)
    with pytest.raises(grpc.RpcError) as raised:
        next(iter(stream))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation(raised.value)[0] == "actions[0]"


def test_watchers_cannot_starve_evaluate(service: Service) -> None:
    """Past a quarter of the worker pool, watch streams are refused and Evaluate keeps answering."""
    streams = [service.stub.WatchDecisions(pb.WatchDecisionsRequest()) for _ in range(3)]
    deadline = time.monotonic() + 10
    while not any(stream.done() for stream in streams) and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = [stream for stream in streams if stream.done()]
    assert len(refused) == 1  # whichever arrived third: the pool of 8 allows 2
    assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert service.evaluate(snapshot(step=0)).action == pb.ACTION_CONTINUE
    for stream in streams:
        stream.cancel()


def test_resent_snapshot_after_restart_is_answered_from_the_log(service: Service) -> None:
    """RestartTest clears the windows, not the record: a retried old snapshot gets its old decision."""
    first = service.evaluate(snapshot(step=0))
    service.evaluate(snapshot(step=1))
    service.stub.RestartTest(pb.RestartTestRequest(test_id="t1", reason="new model build"), timeout=5)
    assert service.evaluate(snapshot(step=0)) == first
    assert service.guard.log.count("t1") == 2


def test_a_failed_log_write_leaves_no_decision_in_memory(tmp_path: Path) -> None:
    """If the decision cannot be logged, the test's state stays as it was: memory never runs ahead of the log."""

    class FailingLog(SqliteLog):
        fail = False

        def append(self, *args: Any, **kwargs: Any) -> Any:
            if self.fail:
                raise OSError("disk full")
            return super().append(*args, **kwargs)

    log = FailingLog(tmp_path / "log.sqlite3")
    guard = Guard(POLICY, log)
    for step in range(3):
        guard.evaluate(snapshot(step=step))
    log.fail = True
    with pytest.raises(LogWriteError, match="disk full"):  # the log's transaction names the OSError
        guard.evaluate(snapshot(step=3))
    log.fail = False
    again = guard.evaluate(snapshot(step=3))
    uninterrupted = Evaluator(POLICY)
    for step in range(3):
        uninterrupted.evaluate(parse_snapshot(snapshot(step=step)))
    want = uninterrupted.evaluate(parse_snapshot(snapshot(step=3))).to_dict()
    assert again == json.loads(json.dumps(want))
    guard.close()


def test_sigterm_with_a_watcher_ends_its_stream_and_drains_fast(tmp_path: Path) -> None:
    """A connected watcher gets a clean end of stream and does not hold the shutdown for the grace period."""
    process, started = start_serve(tmp_path / "data")
    channel = grpc.insecure_channel(started["listen"])
    stream = rpc.RiskServiceStub(channel).WatchDecisions(pb.WatchDecisionsRequest())
    ended: list[str] = []

    def read() -> None:
        try:
            for _ in stream:
                pass
            ended.append("clean")
        except grpc.RpcError as error:
            ended.append(error.code().name)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    reader.join(10)
    channel.close()
    stopped = json.loads(out.splitlines()[-1])
    assert process.returncode == 0
    assert stopped["drain_seconds"] < 5
    assert ended == ["clean"]


def test_evaluate_client_reports_bad_lines_in_contract_words(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`abguard evaluate` prints decisions and names bad lines' fields as the snapshot contract does,
    before protobuf's JSON reading could turn a quoted number or a boolean into a number."""
    from engine.cli import main

    lines = [
        json.dumps(snapshot(step=0)),
        "{oops",
        json.dumps({**snapshot(step=1), "extra": 1}),
        json.dumps(snapshot(step=2, requests=-5)),
        json.dumps({**snapshot(step=2), "rollout_percent": "50", "interval_seconds": True}),
        json.dumps(snapshot(step=3)),
        json.dumps(snapshot(step=2)),  # valid, but older than step 3: only the service can tell
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    code = main(["evaluate", "--server", f"127.0.0.1:{service.port}", "--input", str(source)])
    captured = capsys.readouterr()
    assert code == 1
    assert [json.loads(line)["timestamp"] for line in captured.out.splitlines()] == [
        "2026-11-24T09:00:30Z",
        "2026-11-24T09:02:00Z",
    ]
    errors = captured.err.splitlines()
    assert errors[0].startswith("line 2: $: invalid JSON")
    assert errors[1].startswith("line 3: extra: unknown field")
    assert errors[2] == "line 4: challenger.requests: must be >= 0, got -5"
    assert errors[3] == (
        "line 5: interval_seconds: must be a number, got bool; rollout_percent: must be a number, got str"
    )
    assert errors[4].startswith("line 7: FAILED_PRECONDITION: ") and "older than" in errors[4]
    assert errors[5] == "5 lines rejected"


REBUILDING = "rebuilding state from the decision log; retry"


def test_calls_during_the_rebuild_are_unavailable_and_health_not_serving(tmp_path: Path) -> None:
    """While the state is rebuilt from the log, health says NOT_SERVING and Evaluate, GetTest,
    ListDecisions and RestartTest answer UNAVAILABLE; once it is done, SERVING and the calls work."""
    first = Service(tmp_path / "data")
    for step in range(5):
        first.evaluate(snapshot(step=step))
    first.stop()

    gate = threading.Event()

    class SlowLog(SqliteLog):
        def since_restart(self, test_id: str, from_time: float) -> list[Any]:
            gate.wait(10)  # the rebuild reads here: hold it until the test has looked
            return super().since_restart(test_id, from_time)

    guard = Guard(POLICY, SlowLog(tmp_path / "data" / "decisions.sqlite3"), rebuild_first=True)
    server, port, _ = create_server(guard, "127.0.0.1:0", 4)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub, health = rpc.RiskServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    rebuilder = threading.Thread(target=guard.rebuild)
    request = pb.EvaluateRequest(snapshot=json_format.ParseDict(snapshot(step=5), pb.Snapshot()))
    try:
        for started in (False, True):
            if started:
                rebuilder.start()
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != SERVING
            calls: tuple[Callable[[], object], ...] = (
                lambda: stub.Evaluate(request, timeout=5),
                lambda: stub.GetTest(pb.GetTestRequest(test_id="t1"), timeout=5),
                lambda: stub.ListDecisions(pb.ListDecisionsRequest(test_id="t1"), timeout=5),
                lambda: stub.RestartTest(pb.RestartTestRequest(test_id="t1", reason="x"), timeout=5),
            )
            for call in calls:
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert refused.value.details() == REBUILDING
        gate.set()
        rebuilder.join(10)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        uninterrupted = Evaluator(POLICY)
        for step in range(5):
            uninterrupted.evaluate(parse_snapshot(snapshot(step=step)))
        want = uninterrupted.evaluate(parse_snapshot(snapshot(step=5))).to_dict()
        assert to_dict(stub.Evaluate(request, timeout=5).decision) == json.loads(json.dumps(want))
    finally:
        gate.set()
        channel.close()
        server.stop(2).wait()
        guard.close()


def log_of_many_tests(data_dir: Path, tests: int, rows: list[dict[str, Any]] | None = None) -> int:
    """A log of `tests` copies of `rows` (default: the sustained_medium_risk scenario), real decisions; row count."""
    seed = Guard(POLICY, SqliteLog.in_dir(data_dir))
    for row in scenario("sustained_medium_risk") if rows is None else rows:
        seed.evaluate({**row, "test_id": "seed"})
    seed.close()
    db = sqlite3.connect(data_dir / "decisions.sqlite3")
    with db:
        for n in range(1, tests):
            test_id = f"copy-{n}"
            db.execute(
                "INSERT INTO decisions (decision_id, test_id, event_time, received_at, action, policy_name,"
                " policy_version, policy_digest, snapshot, decision) SELECT decision_id || ?, ?, event_time,"
                " received_at, action, policy_name, policy_version, policy_digest,"
                ' replace(snapshot, \'"test_id":"seed"\', ?), replace(decision, \'"test_id":"seed"\', ?)'
                " FROM decisions WHERE test_id = 'seed'",
                (test_id, test_id, f'"test_id":"{test_id}"', f'"test_id":"{test_id}"'),
            )
    count = int(db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    db.close()
    return count


def test_serve_serves_at_once_and_rebuilds_each_test_on_its_first_call(tmp_path: Path) -> None:
    """`abguard serve` over a long log is SERVING at once (nothing is rebuilt up front); a test's first
    call rebuilds its state from the log, and decides exactly as an uninterrupted run would."""
    rows = scenario("accuracy_regression")
    log_of_many_tests(tmp_path / "data", 25, rows[:-1])
    began = time.monotonic()
    process, started = start_serve(tmp_path / "data")
    try:
        assert started["event"] == "serving"
        assert time.monotonic() - began < 10  # (the interpreter's start; the log is not read first)
        with grpc.insecure_channel(started["listen"]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
            last = {**rows[-1], "test_id": "copy-7"}
            request = pb.EvaluateRequest(snapshot=json_format.ParseDict(last, pb.Snapshot()))
            decided = to_dict(rpc.RiskServiceStub(channel).Evaluate(request, timeout=10).decision)
        uninterrupted = Evaluator(POLICY)
        for row in rows:
            want = uninterrupted.evaluate(parse_snapshot({**row, "test_id": "copy-7"})).to_dict()
        assert decided == json.loads(json.dumps(want))
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


def test_sigterm_right_after_the_start_exits_zero(tmp_path: Path) -> None:
    """SIGTERM right after the port opened, over a long log: exit 0, no error lines."""
    log_of_many_tests(tmp_path / "data", 25)
    process, started = start_serve(tmp_path / "data", ready=False)
    assert started["event"] == "serving"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert err == ""
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events in (["stopping", "stopped"], ["ready", "stopping", "stopped"])


class BrokenStreamGuard(Guard):
    """A guard whose decision stream fails after one decision, with the error given."""

    error: Exception = RuntimeError("boom")

    def stream(self, watcher: Any, alive: Any, poll: float = 0.5) -> Iterator[dict[str, Any]]:
        yield self.evaluate(snapshot(step=0))
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL, "internal error in WatchDecisions: RuntimeError"),
        (
            LogError("the decision log cannot be read: disk I/O error"),
            grpc.StatusCode.UNAVAILABLE,
            "the decision log cannot be read: disk I/O error",
        ),
    ],
    ids=["bug", "log-fault"],
)
def test_a_failing_watch_stream_ends_with_a_mapped_code(
    tmp_path: Path, error: Exception, code: grpc.StatusCode, text: str
) -> None:
    """An error in the middle of WatchDecisions reaches the client as its mapped code, never UNKNOWN,
    and frees the stream's slot."""
    guard = BrokenStreamGuard(POLICY, SqliteLog.in_dir(tmp_path / "data"))
    guard.error = error
    events: list[dict[str, Any]] = []
    server, port, _ = create_server(guard, "127.0.0.1:0", 4, events.append)  # one watch slot
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rpc.RiskServiceStub(channel)
            for _ in range(2):  # the second stream gets the slot the first one freed
                received = []
                with pytest.raises(grpc.RpcError) as ended:
                    for decision in stub.WatchDecisions(pb.WatchDecisionsRequest(), timeout=10):
                        received.append(decision)
                assert len(received) == 1
                assert ended.value.code() == code
                assert ended.value.details() == text
    finally:
        server.stop(2).wait()
        guard.close()
    assert [e["event"] for e in events] == (["internal_error"] * 2 if code == grpc.StatusCode.INTERNAL else [])


def test_a_watch_that_cannot_open_is_internal_and_frees_its_slot(tmp_path: Path) -> None:
    """A stream the guard fails to open is INTERNAL, and its watch slot is not lost: the next one is INTERNAL
    too, not RESOURCE_EXHAUSTED."""

    class NoWatchGuard(Guard):
        def watch(self, test_ids: frozenset[str], actions: frozenset[str]) -> Any:
            raise RuntimeError("cannot watch")

    guard = NoWatchGuard(POLICY, SqliteLog.in_dir(tmp_path / "data"))
    server, port, _ = create_server(guard, "127.0.0.1:0", 4)  # one watch slot
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rpc.RiskServiceStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as refused:
                    next(iter(stub.WatchDecisions(pb.WatchDecisionsRequest(), timeout=10)))
                assert refused.value.code() == grpc.StatusCode.INTERNAL
    finally:
        server.stop(2).wait()
        guard.close()


def test_a_watcher_that_falls_behind_is_resource_exhausted(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher whose queue overflows is dropped with RESOURCE_EXHAUSTED (reconnect), not UNKNOWN."""
    import engine.service.watchers

    monkeypatch.setattr(engine.service.watchers, "WATCH_QUEUE", 5)
    decision = to_dict(service.evaluate(snapshot(step=0)))
    stream = service.stub.WatchDecisions(pb.WatchDecisionsRequest(), timeout=10)
    deadline = time.monotonic() + 5
    while not service.guard.watchers._watchers and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(2000):  # far faster than a stream can send
        service.guard.watchers.publish(decision)
    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ended.value.details() == "watcher fell too far behind; reconnect"
