"""EvaluateBatch and EvaluateStream: many snapshots of many tests per call, one log transaction each,
per-snapshot errors, and nothing kept of a batch the log could not take."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from engine.api.convert import to_dict
from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.contract import parse_snapshot
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.security.limits import LimitSettings
from engine.service import Guard
from engine.store.sqlite import SqliteLog

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])


class FlakyLog(SqliteLog):
    """Fails the append that comes `fail_at` appends from now (then works again)."""

    fail_at: int | None = None

    def append(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_at is not None:
            self.fail_at -= 1
            if self.fail_at < 0:
                self.fail_at = None
                raise OSError("disk full")
        return super().append(*args, **kwargs)


class Served:
    def __init__(self, data: Path) -> None:
        self.log = FlakyLog(data / "decisions.sqlite3")
        self.guard = Guard(POLICY, self.log)
        self.server, port, _ = create_server(self.guard, "127.0.0.1:0", 4)
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = rpc.RiskServiceStub(self.channel)

    def batch(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        request = pb.EvaluateBatchRequest(snapshots=[json_format.ParseDict(row, pb.Snapshot()) for row in rows])
        return [_result(result) for result in self.stub.EvaluateBatch(request, timeout=30).results]

    def close(self) -> None:
        self.channel.close()
        self.server.stop(2).wait()
        self.guard.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "data").mkdir()
    running = Served(tmp_path / "data")
    yield running
    running.close()


def _result(result: pb.EvaluateResult) -> dict[str, Any]:
    if result.HasField("decision"):
        return to_dict(result.decision)
    return {"error": json_format.MessageToDict(result.error, preserving_proto_field_name=True)}


def scenario(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]


def interleaved(*names: str) -> list[dict[str, Any]]:
    """The scenarios' snapshots one of each in turn, as a gateway batching several tests sends them."""
    streams = [scenario(name) for name in names]
    return [row for group in itertools.zip_longest(*streams) for row in group if row is not None]


def replayed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    evaluator = Evaluator(POLICY)
    return [json.loads(json.dumps(evaluator.evaluate(parse_snapshot(row)).to_dict())) for row in rows]


def test_a_batch_of_many_tests_decides_each_as_alone_and_names_each_bad_snapshot(served: Served) -> None:
    """Three tests interleaved in batches of 25, one snapshot broken and one out of order: those two
    get their own error naming the field, every other snapshot the decision a lone replay makes."""
    rows = interleaved("accuracy_regression", "latency_spike", "healthy")
    broken = json.loads(json.dumps(rows[7]))
    broken["challenger"]["requests"] = -5
    late = {**rows[3], "timestamp": "2026-11-24T08:00:00Z"}  # older than its test's last snapshot
    sent = [*rows[:7], broken, *rows[7:40], late, *rows[40:]]
    results: list[dict[str, Any]] = []
    for start in range(0, len(sent), 25):
        results += served.batch(sent[start : start + 25])
    assert results[7] == {
        "error": {
            "code": "INVALID_ARGUMENT",
            "message": "snapshots[7].challenger.requests: must be >= 0, got -5",
            "violations": [{"field": "snapshots[7].challenger.requests", "description": "must be >= 0, got -5"}],
        }
    }
    late_index = 41 % 25
    assert results[41]["error"]["code"] == "FAILED_PRECONDITION"
    assert results[41]["error"]["violations"][0]["field"] == f"snapshots[{late_index}].timestamp"
    decided = [result for index, result in enumerate(results) if index not in (7, 41)]
    by_test = {
        test_id: [d for d in decided if d["test_id"] == test_id]
        for test_id in ("accuracy-regression", "latency-spike", "healthy")
    }
    for test_id, decisions in by_test.items():
        assert decisions == replayed([row for row in rows if row["test_id"] == test_id]), test_id


def test_a_batch_the_log_cannot_take_is_unavailable_and_keeps_nothing(served: Served) -> None:
    """The log fails on the batch's third snapshot: UNAVAILABLE, none of the batch is logged or remembered,
    and sending it again decides it as if nothing had happened."""
    rows = interleaved("error_storm", "latency_spike")
    assert len(served.batch(rows[:10])) == 10
    served.log.fail_at = 2
    with pytest.raises(grpc.RpcError) as refused:
        served.batch(rows[10:30])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert served.log.count("error-storm") + served.log.count("latency-spike") == 10
    results = served.batch(rows[10:30]) + served.batch(rows[30:])
    decided = served.batch(rows[:10]) + results  # the first ten again: answered from the log
    for test_id in ("error-storm", "latency-spike"):
        want = replayed([row for row in rows if row["test_id"] == test_id])
        assert [d for d in decided if d["test_id"] == test_id] == want
    assert served.log.count("error-storm") + served.log.count("latency-spike") == len(rows)


def test_the_stream_answers_each_message_in_order(served: Served) -> None:
    """EvaluateStream: a message of one snapshot or of several, each answered in turn on one stream."""
    rows = interleaved("confidence_drift", "sustained_medium_risk")
    sizes = itertools.cycle([1, 3, 1, 7])
    messages, start = [], 0
    while start < len(rows):
        size = next(sizes)
        messages.append(rows[start : start + size])
        start += size

    def requests() -> Iterator[pb.EvaluateBatchRequest]:
        for message in messages:
            yield pb.EvaluateBatchRequest(snapshots=[json_format.ParseDict(row, pb.Snapshot()) for row in message])

    answers = list(served.stub.EvaluateStream(requests(), timeout=60))
    assert [len(answer.results) for answer in answers] == [len(message) for message in messages]
    decided = [_result(result) for answer in answers for result in answer.results]
    for test_id in ("confidence-drift", "sustained-medium-risk"):
        want = replayed([row for row in rows if row["test_id"] == test_id])
        assert [d for d in decided if d["test_id"] == test_id] == want


def test_a_batch_past_the_limit_is_refused_naming_the_field(served: Served) -> None:
    row = scenario("healthy")[0]
    with pytest.raises(grpc.RpcError) as refused:
        most = LimitSettings().items_per_batch
        served.batch([row] * (most + 1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == f"snapshots: at most {most} snapshots in one batch, got {most + 1}: split it"
    assert served.log.count(row["test_id"]) == 0
