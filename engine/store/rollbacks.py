"""Rollback records and the durable outbox, in SQLite beside the decision log.

The outbox holds what abguard must do outside itself (flip a flag, send alerts) until it is
done: an item is written in the same transaction as the record that asks for it, retried with
backoff until it succeeds, and survives a restart. The decision log stays the source of truth:
a rollback decision whose record is missing (the process died between the two writes) is
found and opened again at start (`engine/service/rollbacks.py`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

from ..rollback.process import Recovery, Rollback, Step, StepState

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollbacks (
    rollback_id TEXT PRIMARY KEY,
    test_id     TEXT NOT NULL,
    opened_at   REAL NOT NULL,
    body        TEXT NOT NULL,
    extra       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS rollbacks_by_test ON rollbacks (test_id, opened_at);
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rollback_id TEXT,
    test_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    key         TEXT NOT NULL UNIQUE,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL NOT NULL,
    last_error  TEXT NOT NULL DEFAULT '',
    done_at     REAL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (done_at, next_at);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


FLAG_KINDS = frozenset({"flag_rollout", "flag_rollback"})  # changes of one test's flag: the newest wins
# items of one test on one channel go out in order
CHANNEL = {
    "flag_rollout": "flag", "flag_rollback": "flag", "alerts": "alertmanager", "rollback_alert": "alertmanager",
    "rollback_webhook": "webhook", "webhook_event": "webhook",
}  # fmt: skip
SCAN = 5000  # undone items looked at per tick


class OutboxItem(NamedTuple):
    id: int
    rollback_id: str | None
    test_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    last_error: str
    done_at: float | None


class Work(NamedTuple):
    """One thing to do outside: `key` makes asking twice harmless."""

    kind: str
    payload: dict[str, Any]
    key: str


class RollbackStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # as the decision log: WAL, durable at checkpoints
        self._db.executescript(SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('created_at', ?)", (repr(time.time()),))
        row = self._db.execute("SELECT value FROM meta WHERE name = 'created_at'").fetchone()
        self.created_at = float(row[0])  # a rollback decided before this predates the records
        self._lock = threading.Lock()

    # --- records -------------------------------------------------------------------------------
    def open(self, record: Rollback, work: Iterable[Work], now: float, extra: dict[str, Any] | None = None) -> bool:
        """Store a new record and the work it asks for, at once; False when it already exists."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO rollbacks (rollback_id, test_id, opened_at, body, extra)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (record.rollback_id, record.test_id, record.opened_at, encode(record), json.dumps(extra or {})),
                ).rowcount
                if inserted:
                    self._enqueue(record.rollback_id, record.test_id, work, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return bool(inserted)

    def update(
        self, rollback_id: str, change: Callable[[Rollback], tuple[Rollback, list[Work]]], now: float
    ) -> Rollback | None:
        """Read, change and write one record in one transaction, with the work the change asks for:
        the request threads (gateway reports) and the outbox worker never overwrite each other's steps.
        None when there is no such record; `change` may raise, which leaves the record as it was."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT body FROM rollbacks WHERE rollback_id = ?", (rollback_id,)).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return None
                record = decode(row[0])
                moved, work = change(record)
                if moved != record:
                    self._db.execute(
                        "UPDATE rollbacks SET body = ? WHERE rollback_id = ?", (encode(moved), rollback_id)
                    )
                self._enqueue(rollback_id, moved.test_id, work, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return moved

    def get(self, rollback_id: str) -> Rollback | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM rollbacks WHERE rollback_id = ?", (rollback_id,)).fetchone()
        return decode(row[0]) if row else None

    def extra(self, rollback_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT extra FROM rollbacks WHERE rollback_id = ?", (rollback_id,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def set_extra(self, rollback_id: str, extra: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE rollbacks SET extra = ? WHERE rollback_id = ?", (json.dumps(extra), rollback_id))

    def latest(self, test_id: str) -> Rollback | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM rollbacks WHERE test_id = ? ORDER BY opened_at DESC, rowid DESC LIMIT 1", (test_id,)
            ).fetchone()
        return decode(row[0]) if row else None

    def listed(self, test_id: str | None = None, limit: int = 100) -> list[Rollback]:
        query = "SELECT body FROM rollbacks"
        args: tuple[Any, ...] = ()
        if test_id:
            query, args = query + " WHERE test_id = ?", (test_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY opened_at DESC, rowid DESC LIMIT ?", (*args, limit)).fetchall()
        return [decode(row[0]) for row in rows]

    def unfinished(self) -> list[Rollback]:
        """Records still being carried out or awaiting their recovery verdict."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM rollbacks ORDER BY opened_at").fetchall()
        records = [decode(row[0]) for row in rows]
        return [r for r in records if not r.closed and (not r.complete() or r.recovery is None)]

    # --- the outbox ----------------------------------------------------------------------------
    def _enqueue(self, rollback_id: str | None, test_id: str, work: Iterable[Work], now: float) -> None:
        for item in work:
            if item.kind in FLAG_KINDS and not self._queued(item.key):
                # the newest flag change wins: an older one still retrying must not land after it
                # (a rollout retried after the rollback would give the challenger its users back)
                self._cancel(test_id, FLAG_KINDS, f"superseded by {item.key}", now, "feature_flags")
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (rollback_id, test_id, kind, payload, key, next_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rollback_id, test_id, item.kind, json.dumps(item.payload, sort_keys=True), item.key, now, now),
            )

    def _cancel(self, test_id: str, kinds: frozenset[str], why: str, now: float, step: str | None) -> None:
        """Undone items of these kinds end unsent; the step they carried out of their record says why."""
        marks = ", ".join("?" * len(kinds))
        owners = self._db.execute(
            f"SELECT DISTINCT rollback_id FROM outbox WHERE test_id = ? AND done_at IS NULL AND kind IN ({marks})"
            " AND rollback_id IS NOT NULL",
            (test_id, *sorted(kinds)),
        ).fetchall()
        self._db.execute(
            "UPDATE outbox SET done_at = ?, last_error = ?"
            f" WHERE test_id = ? AND done_at IS NULL AND kind IN ({marks})",
            (now, why, test_id, *sorted(kinds)),
        )
        if step is None:
            return
        for (rollback_id,) in owners:
            row = self._db.execute("SELECT body FROM rollbacks WHERE rollback_id = ?", (rollback_id,)).fetchone()
            if row is not None:
                record = decode(row[0])
                moved = record.with_step(step, StepState.SKIPPED, now, why)
                if moved != record:
                    self._db.execute(
                        "UPDATE rollbacks SET body = ? WHERE rollback_id = ?", (encode(moved), rollback_id)
                    )

    def close_open(self, test_id: str, why: str, now: float) -> list[str]:
        """A restart: the test's records still running are closed, their undone work cancelled."""
        closed = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT rollback_id, body FROM rollbacks WHERE test_id = ?", (test_id,)
                ).fetchall()
                for rollback_id, body in rows:
                    record = decode(body)
                    if record.closed or (record.complete() and record.recovery is not None):
                        continue
                    self._db.execute(
                        "UPDATE rollbacks SET body = ? WHERE rollback_id = ?",
                        (encode(replace(record, closed=why)), rollback_id),
                    )
                    self._db.execute(
                        "UPDATE outbox SET done_at = ?, last_error = ? WHERE rollback_id = ? AND done_at IS NULL",
                        (now, f"cancelled: {why}", rollback_id),
                    )
                    closed.append(rollback_id)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return closed

    def _queued(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM outbox WHERE key = ?", (key,)).fetchone() is not None

    def enqueue(self, test_id: str, work: Iterable[Work], now: float, rollback_id: str | None = None) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._enqueue(rollback_id, test_id, work, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def due(self, now: float, limit: int = 50) -> list[OutboxItem]:
        """What to send now: per test and channel in the order asked (an item waiting for its retry holds
        back the later ones, so a stale `firing` never lands after its `resolved`), flag changes first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, rollback_id, test_id, kind, payload, attempts, last_error, done_at, next_at FROM outbox"
                " WHERE done_at IS NULL ORDER BY id LIMIT ?",
                (SCAN,),
            ).fetchall()
        ready, held = [], set()
        for row in rows:  # in id order: a channel's items go until the first one still waiting
            channel = (row[2], CHANNEL.get(row[3], row[3]))
            if channel in held:
                continue
            if row[8] <= now:
                ready.append(row)
            else:
                held.add(channel)
        ready.sort(key=lambda row: (row[3] not in FLAG_KINDS, row[0]))
        return [_item(row[:8]) for row in ready[:limit]]

    def items(self, rollback_id: str | None = None, test_id: str | None = None) -> list[OutboxItem]:
        query = "SELECT id, rollback_id, test_id, kind, payload, attempts, last_error, done_at FROM outbox"
        args: tuple[str, ...] = ()
        if rollback_id is not None:
            query, args = query + " WHERE rollback_id = ?", (rollback_id,)
        elif test_id is not None:
            query, args = query + " WHERE test_id = ?", (test_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [_item(row) for row in rows]

    def finished(self, item_id: int, now: float) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET done_at = ?, attempts = attempts + 1 WHERE id = ?", (now, item_id))

    def failed(self, item_id: int, error: str, next_at: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE id = ?",
                (error[:500], next_at, item_id),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def encode(record: Rollback) -> str:
    return json.dumps(asdict(record), sort_keys=True)


def decode(text: str) -> Rollback:
    data = json.loads(text)
    steps = tuple(
        Step(s["name"], StepState(s["state"]), s["at"], s["detail"], s["attempts"]) for s in data.pop("steps")
    )
    recovery = data.pop("recovery")
    return Rollback(
        steps=steps,
        recovery=Recovery(**recovery) if recovery else None,
        alerted_overdue=tuple(data.pop("alerted_overdue")),
        **data,
    )


def _item(row: tuple[Any, ...]) -> OutboxItem:
    return OutboxItem(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7])
