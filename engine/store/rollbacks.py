"""Rollback records and the durable outbox: SQLite beside the decision log, or PostgreSQL beside the
shared one (engine/store/postgres_rollbacks.py), with the same logic over either.

The outbox holds what abguard must do outside itself (flip a flag, send alerts) until it is
done: an item is written in the same transaction as the record that asks for it, retried with
backoff until it succeeds, and survives a restart. The decision log stays the source of truth:
a rollback decision whose record is missing (the process died between the two writes) is
found and opened again at start (`engine/service/rollbacks.py`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

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


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """One open transaction: statements written with `?` placeholders."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...


class RollbackRecords:
    """The records and the outbox, written once over a backend's transactions and reads.

    A backend gives `_transaction()` (one write transaction; every writer of one test is serialized
    by `_lock_test` inside it), `_query()` (one read), `_order` (the insertion-order column) and
    `created_at` (when its store began: a rollback decided before it predates the records)."""

    created_at: float
    _order = "rowid"

    # --- what a backend gives ------------------------------------------------------------------
    def _transaction(self) -> contextlib.AbstractContextManager[Tx]:
        raise NotImplementedError

    def _lock_test(self, tx: Tx, test_id: str) -> None:
        """Hold off other writers of this test until the transaction ends (SQLite: the whole store is)."""

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _statement(self, sql: str, args: Sequence[Any] = ()) -> None:
        """One write on its own."""
        with self._transaction() as tx:
            tx.execute(sql, args)

    def close(self) -> None:
        raise NotImplementedError

    # --- records -------------------------------------------------------------------------------
    def open(self, record: Rollback, work: Iterable[Work], now: float, extra: dict[str, Any] | None = None) -> bool:
        """Store a new record and the work it asks for, at once; False when it already exists."""
        with self._transaction() as tx:
            self._lock_test(tx, record.test_id)
            inserted = tx.execute(
                "INSERT INTO rollbacks (rollback_id, test_id, opened_at, body, extra)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (record.rollback_id, record.test_id, record.opened_at, encode(record), json.dumps(extra or {})),
            ).rowcount
            if inserted:
                self._enqueue(tx, record.rollback_id, record.test_id, work, now)
        return bool(inserted)

    def update(
        self, rollback_id: str, change: Callable[[Rollback], tuple[Rollback, list[Work]]], now: float
    ) -> Rollback | None:
        """Read, change and write one record in one transaction, with the work the change asks for:
        the request threads (gateway reports) and the outbox worker never overwrite each other's steps.
        None when there is no such record; `change` may raise, which leaves the record as it was."""
        owner = self._query("SELECT test_id FROM rollbacks WHERE rollback_id = ?", (rollback_id,))
        if not owner:
            return None
        with self._transaction() as tx:
            self._lock_test(tx, str(owner[0][0]))  # a record's test never changes: lock it, then read
            row = tx.execute("SELECT body FROM rollbacks WHERE rollback_id = ?", (rollback_id,)).fetchone()
            if row is None:
                return None
            record = decode(row[0])
            moved, work = change(record)
            if moved != record:
                tx.execute("UPDATE rollbacks SET body = ? WHERE rollback_id = ?", (encode(moved), rollback_id))
            self._enqueue(tx, rollback_id, moved.test_id, work, now)
        return moved

    def get(self, rollback_id: str) -> Rollback | None:
        rows = self._query("SELECT body FROM rollbacks WHERE rollback_id = ?", (rollback_id,))
        return decode(rows[0][0]) if rows else None

    def extra(self, rollback_id: str) -> dict[str, Any]:
        rows = self._query("SELECT extra FROM rollbacks WHERE rollback_id = ?", (rollback_id,))
        return dict(json.loads(rows[0][0])) if rows else {}

    def set_extra(self, rollback_id: str, extra: dict[str, Any]) -> None:
        self._statement("UPDATE rollbacks SET extra = ? WHERE rollback_id = ?", (json.dumps(extra), rollback_id))

    def latest(self, test_id: str) -> Rollback | None:
        rows = self._query(
            f"SELECT body FROM rollbacks WHERE test_id = ? ORDER BY opened_at DESC, {self._order} DESC LIMIT 1",
            (test_id,),
        )
        return decode(rows[0][0]) if rows else None

    def listed(self, test_id: str | None = None, limit: int | None = 100) -> list[Rollback]:
        """The newest records first, of one test or all; every one when `limit` is None."""
        query = "SELECT body FROM rollbacks"
        args: tuple[Any, ...] = ()
        if test_id:
            query, args = query + " WHERE test_id = ?", (test_id,)
        query += f" ORDER BY opened_at DESC, {self._order} DESC"
        if limit is not None:
            query, args = query + " LIMIT ?", (*args, limit)
        return [decode(row[0]) for row in self._query(query, args)]

    def unfinished(self) -> list[Rollback]:
        """Records still being carried out or awaiting their recovery verdict."""
        records = [decode(row[0]) for row in self._query("SELECT body FROM rollbacks ORDER BY opened_at")]
        return [r for r in records if not r.closed and (not r.complete() or r.recovery is None)]

    # --- the outbox ----------------------------------------------------------------------------
    def _enqueue(self, tx: Tx, rollback_id: str | None, test_id: str, work: Iterable[Work], now: float) -> None:
        for item in work:
            if (
                item.kind in FLAG_KINDS
                and tx.execute("SELECT 1 FROM outbox WHERE key = ?", (item.key,)).fetchone() is None
            ):
                # the newest flag change wins: an older one still retrying must not land after it
                # (a rollout retried after the rollback would give the challenger its users back)
                self._cancel(tx, test_id, FLAG_KINDS, f"superseded by {item.key}", now, "feature_flags")
            tx.execute(
                "INSERT INTO outbox (rollback_id, test_id, kind, payload, key, next_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (rollback_id, test_id, item.kind, json.dumps(item.payload, sort_keys=True), item.key, now, now),
            )

    def _cancel(self, tx: Tx, test_id: str, kinds: frozenset[str], why: str, now: float, step: str | None) -> None:
        """Undone items of these kinds end unsent; the step they carried out of their record says why."""
        marks = ", ".join("?" * len(kinds))
        owners = tx.execute(
            f"SELECT DISTINCT rollback_id FROM outbox WHERE test_id = ? AND done_at IS NULL AND kind IN ({marks})"
            " AND rollback_id IS NOT NULL",
            (test_id, *sorted(kinds)),
        ).fetchall()
        tx.execute(
            "UPDATE outbox SET done_at = ?, last_error = ?"
            f" WHERE test_id = ? AND done_at IS NULL AND kind IN ({marks})",
            (now, why, test_id, *sorted(kinds)),
        )
        if step is None:
            return
        for (rollback_id,) in owners:
            row = tx.execute("SELECT body FROM rollbacks WHERE rollback_id = ?", (rollback_id,)).fetchone()
            if row is not None:
                record = decode(row[0])
                moved = record.with_step(step, StepState.SKIPPED, now, why)
                if moved != record:
                    tx.execute("UPDATE rollbacks SET body = ? WHERE rollback_id = ?", (encode(moved), rollback_id))

    def close_open(self, test_id: str, why: str, now: float) -> list[str]:
        """A restart: the test's records still running are closed, their undone work cancelled."""
        closed = []
        with self._transaction() as tx:
            self._lock_test(tx, test_id)
            rows = tx.execute("SELECT rollback_id, body FROM rollbacks WHERE test_id = ?", (test_id,)).fetchall()
            for rollback_id, body in rows:
                record = decode(body)
                if record.closed or (record.complete() and record.recovery is not None):
                    continue
                tx.execute(
                    "UPDATE rollbacks SET body = ? WHERE rollback_id = ?",
                    (encode(replace(record, closed=why)), rollback_id),
                )
                tx.execute(
                    "UPDATE outbox SET done_at = ?, last_error = ? WHERE rollback_id = ? AND done_at IS NULL",
                    (now, f"cancelled: {why}", rollback_id),
                )
                closed.append(rollback_id)
        return closed

    def enqueue(self, test_id: str, work: Iterable[Work], now: float, rollback_id: str | None = None) -> None:
        with self._transaction() as tx:
            self._lock_test(tx, test_id)
            self._enqueue(tx, rollback_id, test_id, work, now)

    def due(self, now: float, limit: int = 50) -> list[OutboxItem]:
        """What to send now: per test and channel in the order asked (an item waiting for its retry holds
        back the later ones, so a stale `firing` never lands after its `resolved`), flag changes first."""
        rows = self._query(
            "SELECT id, rollback_id, test_id, kind, payload, attempts, last_error, done_at, next_at FROM outbox"
            " WHERE done_at IS NULL ORDER BY id LIMIT ?",
            (SCAN,),
        )
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
        return [_item(row) for row in self._query(query + " ORDER BY id", args)]

    def finished(self, item_id: int, now: float) -> None:
        self._statement("UPDATE outbox SET done_at = ?, attempts = attempts + 1 WHERE id = ?", (now, item_id))

    def failed(self, item_id: int, error: str, next_at: float) -> None:
        self._statement(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE id = ?",
            (error[:500], next_at, item_id),
        )


class RollbackStore(RollbackRecords):
    """The records in SQLite beside the decision log: one process writes them, one writer at a time."""

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

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield cast(Tx, self._db)  # sqlite3's execute is this Tx's
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _statement(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

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
