"""The embedded decision log: SQLite in the data directory, WAL mode, one writer lock."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

from . import Record, Restart

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL,
    test_id TEXT NOT NULL,
    event_time REAL NOT NULL,
    received_at REAL NOT NULL,
    action TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    policy_digest TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_test ON decisions (test_id, seq);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (test_id, event_time);
CREATE TABLE IF NOT EXISTS restarts (
    test_id TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    after_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS restarts_by_test ON restarts (test_id, after_seq);
CREATE TABLE IF NOT EXISTS rollback_evidence (
    seq INTEGER NOT NULL REFERENCES decisions (seq),
    test_id TEXT NOT NULL,
    evidence TEXT NOT NULL
);
"""


_INSERT_DECISION = (
    "INSERT INTO decisions (decision_id, test_id, event_time, received_at, action, policy_name,"
    " policy_version, policy_digest, snapshot, decision) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


class SqliteLog:
    """DecisionLog on one SQLite file; `path` ':memory:' for a throwaway log."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
        self._db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> SqliteLog:
        folder = Path(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / "decisions.sqlite3")

    def append(
        self,
        snapshot: dict[str, Any],
        decision: dict[str, Any],
        event_time: float,
        received_at: float,
        evidence: dict[str, Any] | None,
    ) -> Record:
        policy = decision["policy"]
        row = (
            decision["decision_id"],
            decision["test_id"],
            event_time,
            received_at,
            decision["action"],
            policy["name"],
            policy["version"],
            policy["digest"],
            orjson.dumps(snapshot).decode(),
            orjson.dumps(decision).decode(),
        )
        with self._lock:
            if evidence is None:  # one statement is one transaction in autocommit mode
                seq = int(self._db.execute(_INSERT_DECISION, row).lastrowid or 0)
            else:
                self._db.execute("BEGIN")
                try:
                    seq = int(self._db.execute(_INSERT_DECISION, row).lastrowid or 0)
                    self._db.execute(
                        "INSERT INTO rollback_evidence (seq, test_id, evidence) VALUES (?,?,?)",
                        (seq, decision["test_id"], orjson.dumps(evidence).decode()),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        return Record(seq, decision["test_id"], event_time, received_at, snapshot, decision)

    def find(self, test_id: str, event_time: float) -> Record | None:
        rows = self._query(
            "SELECT * FROM decisions WHERE test_id = ? AND event_time = ? ORDER BY seq DESC LIMIT 1",
            (test_id, event_time),
        )
        return rows[0] if rows else None

    def last(self, test_id: str) -> Record | None:
        rows = self._query("SELECT * FROM decisions WHERE test_id = ? ORDER BY seq DESC LIMIT 1", (test_id,))
        return rows[0] if rows else None

    def page(self, test_id: str, limit: int, before_seq: int | None) -> list[Record]:
        bound = before_seq if before_seq is not None else 2**62
        return self._query(
            "SELECT * FROM decisions WHERE test_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?", (test_id, bound, limit)
        )

    def count(self, test_id: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM decisions WHERE test_id = ?", (test_id,)).fetchone()
        return int(row[0])

    def since_restart(self, test_id: str, from_time: float) -> list[Record]:
        return self._query(
            "SELECT * FROM decisions WHERE test_id = ? AND seq > ? AND event_time >= ? ORDER BY seq",
            (test_id, self._floor(test_id), from_time),
        )

    def tests(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT test_id FROM decisions ORDER BY test_id").fetchall()
        return [row[0] for row in rows]

    def restart(self, test_id: str, reason: str, at: float) -> Restart:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM decisions").fetchone()
            after = int(row[0])
            self._db.execute(
                "INSERT INTO restarts (test_id, at, reason, after_seq) VALUES (?,?,?,?)", (test_id, at, reason, after)
            )
        return Restart(test_id, at, reason, after)

    def last_restart(self, test_id: str) -> Restart | None:
        with self._lock:
            row = self._db.execute(
                "SELECT test_id, at, reason, after_seq FROM restarts WHERE test_id = ? ORDER BY rowid DESC LIMIT 1",
                (test_id,),
            ).fetchone()
        return Restart(row[0], row[1], row[2], row[3]) if row else None

    def evidence(self, test_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT evidence FROM rollback_evidence WHERE test_id = ? ORDER BY seq", (test_id,)
            ).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def _floor(self, test_id: str) -> int:
        restart = self.last_restart(test_id)
        return restart.after_seq if restart else 0

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                sql.replace("SELECT *", "SELECT seq, test_id, event_time, received_at, snapshot, decision"), args
            ).fetchall()
        return [Record(r[0], r[1], r[2], r[3], orjson.loads(r[4]), orjson.loads(r[5])) for r in rows]
