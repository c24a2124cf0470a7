"""Faults of the disk and of the log's file, as `abguard serve` and its clients meet them."""

from __future__ import annotations

import json
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

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
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot
from tests.test_service import start_serve

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
ABGUARD = str(Path(sys.executable).parent / "abguard")


def serve_exit(data_dir: Path | str) -> subprocess.CompletedProcess[str]:
    """`abguard serve` that is expected to refuse to start: its exit code and output."""
    command = [ABGUARD, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
    return subprocess.run(
        [*command, "--policies", str(ROOT / "policies")], capture_output=True, text=True, timeout=60, check=False
    )


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refused start (exit 2, nothing on stdout, no traceback)."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("abguard serve: ")
    return lines[0]


# --- start-up faults ------------------------------------------------------------------------
def test_a_corrupt_database_file_is_named_with_the_fix(tmp_path: Path) -> None:
    """Garbage in decisions.sqlite3: one line naming the file and saying to move it aside, exit 2."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "decisions.sqlite3").write_bytes(b"this is not a database, just some text\n" * 200)
    line = refused(serve_exit(data))
    assert str(data / "decisions.sqlite3") in line
    assert "not a readable SQLite database" in line and "move it aside" in line


def test_a_database_corrupt_past_its_first_page_stops_the_start_in_one_line(tmp_path: Path) -> None:
    """A log whose header is fine but whose tables are garbage: the port opens, the start's reading of
    the log (its rollbacks) finds the damage, and serve exits 2 with one line naming the file and the fix."""
    data = tmp_path / "data"
    guard = Guard(POLICY, SqliteLog.in_dir(data))
    for step in range(10):
        guard.evaluate(snapshot(step=step))
    guard.close()
    with (data / "decisions.sqlite3").open("r+b") as file:
        size = file.seek(0, 2)
        file.seek(4096)  # page 1 (the header and the schema) stays readable
        file.write(b"\xde\xad" * ((size - 4096) // 2))
    done = serve_exit(data)
    assert done.returncode == 2, done.stderr
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["serving", "start_failed", "stopped"]
    assert done.stderr.splitlines() == [
        f"abguard serve: cannot read the decision log {data / 'decisions.sqlite3'}: the decision log cannot be read:"
        " database disk image is malformed: move it aside to start a new log, or restore it"
    ]


def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    """--data-dir naming a regular file: one line saying so, exit 2."""
    target = tmp_path / "plain-file"
    target.write_text("x")
    line = refused(serve_exit(target))
    assert f"the data folder {target} is a file" in line


def test_a_data_dir_under_a_file_names_the_file_in_the_way(tmp_path: Path) -> None:
    """A data dir that cannot be created because a parent is a file: the line names that file."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = refused(serve_exit(blocker / "sub" / "data"))
    assert f"cannot create the data folder {blocker / 'sub' / 'data'}: {blocker} is a file" in line


@pytest.mark.parametrize(
    ("folder", "said"),
    [("/proc/abguard-data", "cannot create the data folder /proc/abguard-data"), ("/proc/1", "cannot create files in")],
    ids=["cannot-create", "cannot-write"],
)
def test_a_data_dir_that_cannot_be_created_or_written(folder: str, said: str) -> None:
    """/proc refuses new folders and files even to root: one line naming the folder, exit 2."""
    line = refused(serve_exit(folder))
    assert said in line and "choose a folder this user can" in line


def test_a_database_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    """DATA_DIR/decisions.sqlite3 is a directory: one line naming it, exit 2."""
    (tmp_path / "data" / "decisions.sqlite3").mkdir(parents=True)
    line = refused(serve_exit(tmp_path / "data"))
    assert f"{tmp_path / 'data' / 'decisions.sqlite3'} is a folder" in line


def test_malformed_rows_are_reported_and_the_service_still_serves(tmp_path: Path) -> None:
    """Rows whose JSON is broken or short of fields: one event each naming the seq and why; the rest serves."""
    log = SqliteLog.in_dir(tmp_path / "data")
    guard = Guard(POLICY, log)
    for step in range(6):
        guard.evaluate(snapshot(step=step))
    guard.close()
    db = sqlite3.connect(tmp_path / "data" / "decisions.sqlite3")
    with db:
        db.execute("UPDATE decisions SET decision = 'not json {' WHERE seq = 2")
        db.execute("UPDATE decisions SET snapshot = '[1, 2' WHERE seq = 3")
        db.execute("""UPDATE decisions SET decision = '{"test_id": "t1"}' WHERE seq = 4""")
        db.execute("UPDATE decisions SET decision = 'null' WHERE seq = 6")  # the newest row
    db.close()

    process, started = start_serve(tmp_path / "data")
    before = [started]  # whatever the service logged before it listens
    while before[-1]["event"] != "serving":
        before.append(json.loads(process.stdout.readline()))  # type: ignore[union-attr]
    started = before[-1]
    try:
        with grpc.insecure_channel(started["listen"]) as channel:
            stub = rpc.RiskServiceStub(channel)
            request = pb.EvaluateRequest(snapshot=json_format.ParseDict(snapshot(step=6), pb.Snapshot()))
            assert stub.Evaluate(request, timeout=10, wait_for_ready=True).decision.test_id == "t1"
            listed = stub.ListDecisions(pb.ListDecisionsRequest(test_id="t1", page_size=2), timeout=10)
            assert len(listed.decisions) == 2 and listed.next_page_token  # pages skip the bad rows, not end at them
            view = stub.GetTest(pb.GetTestRequest(test_id="t1"), timeout=10)
            assert view.last_decision.timestamp == "2026-11-24T09:03:30Z"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    events = before + [json.loads(line) for line in out.splitlines()]
    skipped = {e["seq"]: e["why"] for e in events if e["event"] == "unreadable_record"}
    assert set(skipped) == {2, 3, 4, 6}, events
    assert "decision column is not JSON" in skipped[2]
    assert "snapshot column is not JSON" in skipped[3]
    assert "the decision lacks action" in skipped[4]
    assert "decision column is not a JSON object" in skipped[6]
    assert all(e["test_id"] == "t1" for e in events if e["event"] == "unreadable_record")


# --- the log cannot be written while serving -------------------------------------------------
class Served:
    """An in-process server over a real SQLite log, probing every 0.2 s."""

    def __init__(self, data_dir: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self.log = SqliteLog.in_dir(data_dir)
        self.guard = Guard(POLICY, self.log, on_event=self.events.append, probe_seconds=0.2)
        self.server, port, _ = create_server(self.guard, "127.0.0.1:0", 4, self.events.append)
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = rpc.RiskServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def evaluate(self, row: dict[str, Any]) -> pb.Decision:
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))
        return cast(pb.Decision, self.stub.Evaluate(request, timeout=10).decision)  # the stub is untyped

    def status(self, service: str = "") -> int:
        return int(self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)

    def pragma(self, text: str) -> None:
        """A fault of the log's own connection (what the disk or the file system would cause)."""
        with self.log._lock:
            self.log._db.execute(text).fetchall()

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(2).wait()
        self.guard.close()


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _full(served: Served) -> None:
    pages = served.log._db.execute("PRAGMA page_count").fetchone()[0]
    served.pragma(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL: the next page cannot be had


@pytest.mark.parametrize(
    ("break_it", "mend_it", "why"),
    [
        (_full, lambda s: s.pragma("PRAGMA max_page_count = 1073741823"), "database or disk is full"),
        (
            lambda s: s.pragma("PRAGMA query_only = ON"),
            lambda s: s.pragma("PRAGMA query_only = OFF"),
            "attempt to write a readonly database",
        ),
    ],
    ids=["disk-full", "read-only"],
)
def test_an_unwritable_log_is_unavailable_and_not_serving_until_it_heals(
    tmp_path: Path, break_it: Callable[[Served], None], mend_it: Callable[[Served], None], why: str
) -> None:
    """Evaluate and RestartTest answer UNAVAILABLE naming the cause, health turns NOT_SERVING, nothing
    of the refused decision stays in memory; once writes work the probe turns health back to SERVING."""
    served = Served(tmp_path / "data")
    try:
        for step in range(3):
            served.evaluate(snapshot(step=step))
        state = served.guard.states["t1"]
        break_it(served)
        calls: list[Callable[[], object]] = [lambda: served.evaluate(snapshot(step=3))]
        if "readonly" in why:  # (a restart's small row still fits in a page of a full database)
            calls.append(lambda: served.stub.RestartTest(pb.RestartTestRequest(test_id="t1", reason="x"), timeout=5))
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == f"the decision log cannot be written: {why}"
        assert served.guard.states["t1"] is state  # memory never runs ahead of the log
        assert served.stub.GetTest(pb.GetTestRequest(test_id="t1"), timeout=5).decisions == 3
        for name in ("", "abguard.v1.RiskService"):
            assert served.status(name) == health_pb2.HealthCheckResponse.NOT_SERVING
        time.sleep(0.6)  # several probes, all failing
        assert served.status() == health_pb2.HealthCheckResponse.NOT_SERVING
        mend_it(served)
        assert wait_for(lambda: served.status() == health_pb2.HealthCheckResponse.SERVING, 5)
        uninterrupted = Evaluator(POLICY)
        for step in range(3):
            uninterrupted.evaluate(parse_snapshot(snapshot(step=step)))
        want = uninterrupted.evaluate(parse_snapshot(snapshot(step=3))).to_dict()
        assert to_dict(served.evaluate(snapshot(step=3))) == json.loads(json.dumps(want))
        health_events = [e for e in served.events if e["event"].startswith("log_")]
        assert [e["event"] for e in health_events] == ["log_unwritable", "log_writable"]
        assert why in health_events[0]["why"]
    finally:
        served.stop()


def test_sigterm_while_the_disk_is_full_exits_cleanly(tmp_path: Path) -> None:
    """`abguard serve` whose files cannot grow: Evaluate UNAVAILABLE, health NOT_SERVING, then SIGTERM
    exits 0 with a line saying the checkpoint failed; every answered decision is in the log after."""
    data = tmp_path / "data"
    guard = Guard(POLICY, SqliteLog.in_dir(data))
    for step in range(40):
        guard.evaluate(snapshot(step=step))
    guard.close()
    size = (data / "decisions.sqlite3").stat().st_size
    process, started = start_serve(data)
    # the kernel refuses to grow any file of the process past 8 KB more than the log has: a full disk for SQLite
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (size + 8192, resource.RLIM_INFINITY))
    answered, refusal = [], None
    with grpc.insecure_channel(started["listen"]) as channel:
        stub = rpc.RiskServiceStub(channel)
        for step in range(40, 100):
            request = pb.EvaluateRequest(snapshot=json_format.ParseDict(snapshot(step=step), pb.Snapshot()))
            try:
                answered.append(stub.Evaluate(request, timeout=10, wait_for_ready=True).decision.decision_id)
            except grpc.RpcError as error:
                refusal = error
                break
        assert refusal is not None and refusal.code() == grpc.StatusCode.UNAVAILABLE
        assert (refusal.details() or "").startswith("the decision log cannot be written: ")
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert "log_unwritable" in kinds and "checkpoint_failed" in kinds and kinds[-1] == "stopped", kinds
    failed = next(e for e in events if e["event"] == "checkpoint_failed")
    assert "checkpoint of" in failed["why"] and "-wal file keeps every decision" in failed["why"]
    log = SqliteLog.in_dir(data)
    stored = {r.decision["decision_id"] for r in log.page("t1", 1000, None)}
    log.close()
    assert set(answered) <= stored and len(stored) == 40 + len(answered)
