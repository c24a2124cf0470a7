"""The audit trail: the decision log's hash chain, `abguard audit verify` naming the first tampered
record for each kind of tampering, the upgrade of a log from before the chain, and `audit export`."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.policy import load_effective
from engine.service import Guard
from engine.store.chain import CHAINED, GENESIS, record_hash
from engine.store.sqlite import SqliteLog

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
SCENARIOS = ("accuracy_regression", "error_storm")


def scenario(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose log holds two scenarios decided by the real guard (written once, copied per test)."""
    data = tmp_path_factory.mktemp("written")
    guard = Guard(POLICY, SqliteLog.in_dir(data))
    for name in SCENARIOS:
        for row in scenario(name):
            guard.evaluate(row)
    guard.close()
    return data


@pytest.fixture
def data(written: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(written, copy)
    return copy


@pytest.fixture
def db(data: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(data / "decisions.sqlite3", isolation_level=None)
    yield connection
    connection.close()


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def row_at(db: sqlite3.Connection, seq: int) -> dict[str, Any]:
    cursor = db.execute("SELECT * FROM decisions WHERE seq = ?", (seq,))
    names = [column[0] for column in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def tampered(out: str, kind: str, seq: int, test_id: str, timestamp: str) -> bool:
    return out.startswith(f"tampered: {kind}: seq {seq} (test {test_id}, {timestamp}):")


# --- the chain ----------------------------------------------------------------------------------
def test_every_record_is_chained_to_the_one_before(data: Path, db: sqlite3.Connection) -> None:
    """Each row's hash is SHA-256 over its stored columns and prev_hash; the first links to 64 zeros."""
    rows = db.execute(f"SELECT {', '.join(CHAINED)}, prev_hash, hash FROM decisions ORDER BY seq").fetchall()
    assert len(rows) == sum(len(scenario(name)) for name in SCENARIOS)
    previous = GENESIS
    for row in rows:
        assert row[-2] == previous
        assert row[-1] == record_hash(row[:-2], previous)
        previous = row[-1]


def test_appended_records_carry_their_chain_hashes(tmp_path: Path) -> None:
    """The Record an append returns, and the one read back, carry the stored prev_hash and hash."""
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    rows = scenario("accuracy_regression")[:2]
    guard.evaluate(rows[0])
    guard.evaluate(rows[1])
    first, second = guard.log.page("accuracy-regression", 2, None)[::-1]
    guard.close()
    assert first.prev_hash == GENESIS and len(first.hash) == 64
    assert second.prev_hash == first.hash


def test_the_chain_encoding_tells_fields_and_storage_classes_apart() -> None:
    """Moving bytes between fields, or storing a number as text, changes the hash."""
    assert record_hash((1, "ab", "c"), GENESIS) != record_hash((1, "a", "bc"), GENESIS)
    assert record_hash((1, "x", 2.0), GENESIS) != record_hash((1, "x", "2.0"), GENESIS)
    assert record_hash((1, "x", 2), GENESIS) != record_hash((1, "x", 2.0), GENESIS)


# --- verify -------------------------------------------------------------------------------------
def test_an_untouched_log_verifies_intact(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    head = db.execute("SELECT hash FROM decisions ORDER BY seq DESC LIMIT 1").fetchone()[0]
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 0
    assert out == f"intact: 140 records, head {head}\n"


def test_an_empty_log_verifies_intact_at_the_genesis_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SqliteLog.in_dir(tmp_path).close()
    code, out, _ = audit(capsys, "verify", "--data-dir", str(tmp_path))
    assert (code, out) == (0, f"intact: 0 records, head {GENESIS}\n")


def test_an_edited_record_is_named(data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    """Changing a decision's action in place: the chain breaks at that record, as an edit."""
    db.execute("UPDATE decisions SET decision = replace(decision, '\"continue\"', '\"rollback\"') WHERE seq = 10")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert tampered(out, "content edited", 10, "accuracy-regression", "2026-11-24T09:05:00Z"), out


def test_an_edited_column_outside_the_json_is_named(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chain covers every stored column, not only the decision's JSON: here the event time."""
    db.execute("UPDATE decisions SET event_time = event_time + 1 WHERE seq = 50")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert out.startswith("tampered: content edited: seq 50 "), out


def test_a_deleted_record_is_named(data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    """A gap in seq: the record after it is named, and the missing seq with it."""
    db.execute("DELETE FROM decisions WHERE seq = 10")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert tampered(out, "record deleted", 11, "accuracy-regression", "2026-11-24T09:05:30Z"), out
    assert "seq 10 before it is missing" in out


def test_a_deleted_record_hidden_by_renumbering_is_named(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    db.execute("DELETE FROM decisions WHERE seq = 10")
    db.execute("UPDATE decisions SET seq = seq + 100000 WHERE seq > 10")
    db.execute("UPDATE decisions SET seq = seq - 100001 WHERE seq > 100000")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert out.startswith("tampered: record deleted: seq 10 "), out
    assert "written as seq 11" in out


def test_records_deleted_at_the_end_are_named(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chain of what is left holds, but SQLite's sequence counter remembers the last seq given out."""
    db.execute("DELETE FROM decisions WHERE seq >= 130")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert out.startswith("tampered: record deleted: seq 130..140 after seq 129 missing at the end"), out


def test_two_swapped_records_are_named_as_reordered(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Swapping two records' seq: the first of the pair is named, with the seq it was written as."""
    db.execute("UPDATE decisions SET seq = -1 WHERE seq = 20")
    db.execute("UPDATE decisions SET seq = 20 WHERE seq = 21")
    db.execute("UPDATE decisions SET seq = 21 WHERE seq = -1")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert tampered(out, "reordered", 20, "accuracy-regression", "2026-11-24T09:10:30Z"), out
    assert "it was written as seq 21" in out


def test_two_swapped_contents_are_named_as_reordered(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Swapping two records' content and keeping their seq and hashes in place is a reorder too."""
    moved = ("decision_id", "event_time", "received_at", "action", "snapshot", "decision")
    first, second = row_at(db, 20), row_at(db, 21)
    for seq, source in ((20, second), (21, first)):
        assignments = ", ".join(f"{name} = ?" for name in moved)
        db.execute(f"UPDATE decisions SET {assignments} WHERE seq = ?", (*(source[n] for n in moved), seq))
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert tampered(out, "reordered", 20, "accuracy-regression", "2026-11-24T09:10:30Z"), out
    assert "it holds the content written as seq 21" in out


def insert_after(db: sqlite3.Connection, seq: int, forged: dict[str, Any]) -> None:
    """Make room after `seq` by renumbering the rest, and insert `forged` there."""
    db.execute("UPDATE decisions SET seq = seq + 100000 WHERE seq > ?", (seq,))
    db.execute("UPDATE decisions SET seq = seq - 99999 WHERE seq > 100000")
    names = list(forged)
    db.execute(
        f"INSERT INTO decisions ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [forged[n] for n in names],
    )


def test_a_forged_record_inserted_in_the_middle_is_named(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy of seq 10 with a later time, linked to seq 10 but with a made-up hash, put in as seq 11."""
    forged = row_at(db, 10) | {"seq": 11, "event_time": row_at(db, 10)["event_time"] + 1}
    forged["prev_hash"], forged["hash"] = row_at(db, 10)["hash"], "f" * 64
    insert_after(db, 10, forged)
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert tampered(out, "inserted", 11, "accuracy-regression", "2026-11-24T09:05:01Z"), out


def test_a_forged_record_with_a_correct_hash_is_named(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forger who computes the forged record's hash is caught by the next record, which links past it."""
    forged = row_at(db, 10) | {"seq": 11, "event_time": row_at(db, 10)["event_time"] + 1}
    forged["prev_hash"] = row_at(db, 10)["hash"]
    forged["hash"] = record_hash(tuple(forged[name] for name in CHAINED), forged["prev_hash"])
    insert_after(db, 10, forged)
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert tampered(out, "inserted", 11, "accuracy-regression", "2026-11-24T09:05:01Z"), out
    assert "seq 12 links to seq 10" in out


def test_a_record_appended_without_a_hash_is_named(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    columns = ", ".join(CHAINED[1:])
    db.execute(f"INSERT INTO decisions ({columns}) SELECT {columns} FROM decisions WHERE seq = 140")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert out.startswith("tampered: inserted: seq 141 (test error-storm, 2026-11-24T09:30:00Z): it has no chain hash")


def test_a_changed_link_is_named(data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    db.execute("UPDATE decisions SET hash = 'ab' || substr(hash, 3) WHERE seq = 30")
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert out.startswith("tampered: chain link broken: seq 30 "), out


def test_appending_after_tampering_does_not_heal_the_chain(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last record deleted, then a new decision: seq goes on from the counter, so the gap stays."""
    db.execute("DELETE FROM decisions WHERE seq = 140")
    guard = Guard(POLICY, SqliteLog.in_dir(data))
    row = scenario("error_storm")[-1] | {"timestamp": "2026-11-24T10:00:00Z"}
    guard.evaluate(row)
    guard.close()
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 1
    assert out.startswith("tampered: record deleted: seq 141 "), out


# --- a log from before the chain ------------------------------------------------------------------
def unchain(path: Path) -> None:
    """Rebuild the decisions table without prev_hash and hash: the log as the previous version wrote it."""
    connection = sqlite3.connect(path, isolation_level=None)
    keep = [name for name in CHAINED if name != "seq"]
    connection.executescript(
        f"""
        BEGIN;
        CREATE TABLE old_decisions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT NOT NULL, test_id TEXT NOT NULL,
            event_time REAL NOT NULL, received_at REAL NOT NULL, action TEXT NOT NULL, policy_name TEXT NOT NULL,
            policy_version INTEGER NOT NULL, policy_digest TEXT NOT NULL, snapshot TEXT NOT NULL, decision TEXT NOT NULL
        );
        INSERT INTO old_decisions (seq, {", ".join(keep)}) SELECT seq, {", ".join(keep)} FROM decisions;
        DROP TABLE decisions;
        ALTER TABLE old_decisions RENAME TO decisions;
        CREATE INDEX decisions_by_test ON decisions (test_id, seq);
        CREATE INDEX decisions_by_time ON decisions (test_id, event_time);
        COMMIT;
        """
    )
    connection.close()


def test_a_log_from_before_the_chain_is_upgraded_on_open_and_verifies(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The columns are added and the existing rows chained in order; checkpoints and evidence are kept."""
    path = data / "decisions.sqlite3"
    original = sqlite3.connect(path)
    hashes = [row[0] for row in original.execute("SELECT hash FROM decisions ORDER BY seq")]
    kept = {
        table: original.execute(f"SELECT * FROM {table}").fetchall() for table in ("checkpoints", "rollback_evidence")
    }
    original.close()
    unchain(path)
    old = sqlite3.connect(path)
    assert "hash" not in {column[1] for column in old.execute("PRAGMA table_info(decisions)")}
    old.close()

    log = SqliteLog(path)
    assert log.last("error-storm") is not None
    log.close()
    upgraded = sqlite3.connect(path)
    assert [row[0] for row in upgraded.execute("SELECT hash FROM decisions ORDER BY seq")] == hashes
    assert {table: upgraded.execute(f"SELECT * FROM {table}").fetchall() for table in kept} == kept
    upgraded.close()
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert (code, out) == (0, f"intact: 140 records, head {hashes[-1]}\n")


def test_an_upgraded_log_goes_on_chaining_new_decisions(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unchain(data / "decisions.sqlite3")
    guard = Guard(POLICY, SqliteLog.in_dir(data))
    guard.evaluate(scenario("error_storm")[-1] | {"timestamp": "2026-11-24T10:00:00Z"})
    guard.close()
    code, out, _ = audit(capsys, "verify", "--data-dir", str(data))
    assert code == 0
    assert out.startswith("intact: 141 records, head ")


# --- usage errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["verify", "export"])
def test_a_missing_data_dir_or_log_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    """Exit 2 and one line, and no log is created where there was none."""
    code, out, err = audit(capsys, verb, "--data-dir", str(tmp_path / "nowhere"))
    assert (code, out) == (2, "")
    assert err == f"abguard audit {verb}: no such data folder: {tmp_path / 'nowhere'}\n"
    code, _, err = audit(capsys, verb, "--data-dir", str(tmp_path))
    assert code == 2
    assert "no decision log in" in err
    assert not (tmp_path / "decisions.sqlite3").exists()


def test_a_data_dir_holding_no_sqlite_database_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "decisions.sqlite3").write_bytes(b"not a database" * 100)
    code, _, err = audit(capsys, "verify", "--data-dir", str(tmp_path))
    assert code == 2
    assert "is not a readable SQLite database" in err


def test_a_bad_since_is_a_usage_error(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = audit(capsys, "export", "--data-dir", str(data), "--since", "yesterday")
    assert code == 2
    assert "--since" in err


def test_verify_needs_a_data_dir_or_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["audit", "verify"])
    assert stopped.value.code == 2
    assert "abguard audit verify: error: one of the arguments --data-dir --log is required" in capsys.readouterr().err


# --- export ---------------------------------------------------------------------------------------
def chain_of(db: sqlite3.Connection) -> dict[int, tuple[str, str]]:
    return {int(seq): (prev, digest) for seq, prev, digest in db.execute("SELECT seq, prev_hash, hash FROM decisions")}


def exported(capsys: pytest.CaptureFixture[str], data: Path, *extra: str) -> dict[str, Any]:
    code, out, _ = audit(capsys, "export", "--data-dir", str(data), *extra)
    assert code == 0
    document: dict[str, Any] = json.loads(out)
    return document


def test_export_json_gives_the_one_rollback_of_the_accuracy_regression(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """One record: the decision that started the rollback, not the repeats after it, with its chain hashes."""
    document = exported(capsys, data, "--test", "accuracy-regression")
    chain = chain_of(db)
    assert document["chain_head"] == chain[max(chain)][1]
    [record] = document["records"]
    decision = json.loads(row_at(db, record["seq"])["decision"])
    assert decision["action"] in ("rollback", "immediate_rollback")
    assert decision["triggered_by"] != "rolled_back_test"
    repeats = db.execute(
        "SELECT COUNT(*) FROM decisions WHERE test_id = 'accuracy-regression' AND action LIKE '%rollback' AND seq > ?",
        (record["seq"],),
    ).fetchone()[0]
    assert repeats > 0  # the rolled-back test's later decisions repeat the rollback and are left out
    assert record == {
        "test_id": "accuracy-regression",
        "rollback_timestamp": decision["timestamp"],
        "decision_id": decision["decision_id"],
        "trigger_reason": decision["reason"],
        "triggered_by": decision["triggered_by"],
        "risk_conditions": [c["name"] for c in decision["conditions"] if c["status"] in ("triggered", "critical")],
        "performance_impact": {
            "risk_score": decision["risk_score"],
            "contributions": {c["name"]: c["contribution"] for c in decision["conditions"]},
        },
        "affected_users": 10.0,
        "recovery_time": None,  # this log has no rollback records beside it (tests/test_rollback.py has)
        "recovery_status": None,
        "rollback_status": None,
        "requested_by": "abguard",
        "policy": decision["policy"],
        "seq": record["seq"],
        "prev_hash": chain[record["seq"]][0],
        "hash": chain[record["seq"]][1],
    }
    assert "accuracy" in record["risk_conditions"]
    assert record["prev_hash"] == chain[record["seq"] - 1][1]


def test_export_hashes_can_be_checked_offline(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported record's hash is the chain's hash over the stored row, recomputed here from the file."""
    [record] = exported(capsys, data, "--test", "accuracy-regression")["records"]
    row = db.execute(f"SELECT {', '.join(CHAINED)} FROM decisions WHERE seq = ?", (record["seq"],)).fetchone()
    assert record_hash(row, record["prev_hash"]) == record["hash"]


def test_export_csv_has_a_header_and_one_row_per_rollback(
    data: Path, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = audit(capsys, "export", "--data-dir", str(data), "--test", "accuracy-regression", "--format", "csv")
    assert code == 0
    [row] = list(csv.DictReader(io.StringIO(out)))
    [record] = exported(capsys, data, "--test", "accuracy-regression")["records"]
    assert row["seq"] == str(record["seq"])
    assert row["hash"] == record["hash"] == chain_of(db)[record["seq"]][1]
    assert row["prev_hash"] == record["prev_hash"]
    assert row["risk_conditions"] == ";".join(record["risk_conditions"])
    assert row["contributions"].split(";")[0] == f"accuracy={record['performance_impact']['contributions']['accuracy']}"
    assert row["trigger_reason"] == record["trigger_reason"]
    assert (row["affected_users"], row["recovery_time"]) == ("10.0", "")
    assert row["policy_digest"] == record["policy"]["digest"]


def test_export_filters_by_test_and_time(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without filters both scenarios' rollbacks, oldest first; --test and --since narrow them."""
    everything = exported(capsys, data)["records"]
    assert [r["test_id"] for r in everything] == ["accuracy-regression", "error-storm"]
    assert [r["test_id"] for r in exported(capsys, data, "--test", "error-storm")["records"]] == ["error-storm"]
    assert exported(capsys, data, "--test", "no-such-test")["records"] == []
    first, second = everything
    at_second = exported(capsys, data, "--since", second["rollback_timestamp"])["records"]
    assert [r["decision_id"] for r in at_second] == [second["decision_id"]]
    assert exported(capsys, data, "--since", first["rollback_timestamp"])["records"] == everything
    assert exported(capsys, data, "--since", "2030-01-01T00:00:00Z")["records"] == []
    code, out, _ = audit(
        capsys, "export", "--data-dir", str(data), "--since", "2030-01-01T00:00:00Z", "--format", "csv"
    )
    assert (code, out.count("\n")) == (0, 1)  # the header only
