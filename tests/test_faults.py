"""Faults of the disk and of the log's file, as `abguard serve` and its clients meet them."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
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
