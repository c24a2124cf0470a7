"""Rollback records and the outbox in PostgreSQL, beside the shared decision log.

Every replica sees the same records (GetRollback, a manual rollback, a gateway's step report
answered by any replica), and the outbox runs once, however many replicas there are: the
replica whose worker holds a session advisory lock on the schema's outbox is the one that sends,
and when its process dies PostgreSQL ends the session and another replica's worker takes the
lock on its next tick. Every writer of one test's records holds that test's transaction lock,
so two replicas never overwrite each other's change of one record.

An item is sent at least once: a leader that dies between sending and marking it done leaves it
to the next leader, which sends it again (flag changes set a value and alerts are keyed, so a
repeat changes nothing).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from . import LogError, LogOpenError, LogWriteError
from .postgres import bounded, one_line, open_pool, safe_url, translated
from .rollbacks import Cursor, OutboxItem, RollbackRecords, Tx

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollbacks (
    created     BIGSERIAL,
    rollback_id TEXT PRIMARY KEY,
    test_id     TEXT NOT NULL,
    opened_at   DOUBLE PRECISION NOT NULL,
    body        TEXT NOT NULL,
    extra       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS rollbacks_by_test ON rollbacks (test_id, opened_at);
CREATE TABLE IF NOT EXISTS outbox (
    id          BIGSERIAL PRIMARY KEY,
    rollback_id TEXT,
    test_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    key         TEXT NOT NULL UNIQUE,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     DOUBLE PRECISION NOT NULL,
    last_error  TEXT NOT NULL DEFAULT '',
    done_at     DOUBLE PRECISION,
    created_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_undone ON outbox (id) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_by_test ON outbox (test_id, id);
CREATE TABLE IF NOT EXISTS rollback_meta (name TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL);
"""
# a lock wait on the rollback records gives up after this (their transactions may wait on an alert
# being queued, never on a network call); no idle-in-transaction limit: the records' worker is one process
ROLLBACK_LOCK_MS = 5_000
LEADER_SILENCE = 10  # seconds without a word after which PostgreSQL ends the sender's session
SCHEMA_LOCK = 7_310_012  # advisory lock id: replicas starting together create the tables one at a time
# advisory locks are per database: the outbox's and each test's are keyed by the schema too
_OUTBOX_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('abguard-outbox:' || current_schema(), 0))"
_TEST_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('abguard-rollbacks:' || current_schema() || ?::text, 0))"


class _Tx:
    """A psycopg connection inside its transaction, taking the `?` statements of RollbackRecords."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql.replace("?", "%s"), tuple(args))


class PostgresRollbackStore(RollbackRecords):
    """RollbackRecords on PostgreSQL: `url` as serve --log (the tables go to the connection's schema)."""

    _order = "created"

    def __init__(self, url: str, pool_size: int = 4, timeout: float = 5.0) -> None:
        self.url = url
        self.path = safe_url(url)
        self._connect_timeout = max(1, int(timeout))
        try:
            conninfo = bounded(url, ROLLBACK_LOCK_MS, None)
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=self._connect_timeout) as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    conn.execute(SCHEMA)
                    conn.execute(
                        "INSERT INTO rollback_meta (name, value) VALUES ('created_at', EXTRACT(EPOCH FROM now()))"
                        " ON CONFLICT (name) DO NOTHING"
                    )
                row = conn.execute("SELECT value FROM rollback_meta WHERE name = 'created_at'").fetchone()
        except psycopg.Error as error:
            raise LogOpenError(f"cannot open the rollback records at {self.path}: {one_line(error)}") from error
        self.created_at = float(row[0]) if row else 0.0  # a rollback decided before this predates the records
        # checked on checkout (a round trip; records change rarely): the first write after an outage
        # gets a live connection, not one the outage broke, so no outbox item is lost to it
        self._pool = open_pool(
            url, "abguard-rollbacks", pool_size, timeout, "the rollback records", ConnectionPool.check_connection,
            bounded(url, ROLLBACK_LOCK_MS, None),
        )  # fmt: skip
        self._leader: psycopg.Connection[Any] | None = None  # the session that holds (or asks for) the outbox
        self._leading = False
        self._leader_lock = threading.Lock()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._errors(LogWriteError), self._pool.connection() as conn, conn.transaction():
            yield _Tx(conn)

    def _lock_test(self, tx: Tx, test_id: str) -> None:
        tx.execute(_TEST_LOCK, (test_id,))

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._errors(LogError), self._pool.connection() as conn:
            return conn.execute(sql.replace("?", "%s"), tuple(args)).fetchall()

    # --- one sender among the replicas ----------------------------------------------------------
    def due(self, now: float, limit: int = 50) -> list[OutboxItem]:
        """What to send now, to the one replica that holds the outbox; nothing to the others."""
        return super().due(now, limit) if self.leads() else []

    def leads(self) -> bool:
        """Whether this process sends the outbox: it holds the schema's outbox lock, or takes it now."""
        with self._leader_lock:
            try:
                if self._leader is None or self._leader.closed or self._leader.broken:
                    self._leading = False
                    conninfo = bounded(self.url, ROLLBACK_LOCK_MS, None)
                    self._leader = psycopg.connect(conninfo, autocommit=True, connect_timeout=self._connect_timeout)
                    # a sender cut off from PostgreSQL (a partition, a proxy that keeps the server side
                    # open) must not hold the outbox until TCP notices, hours later: the server ends a
                    # session silent for LEADER_SILENCE, and the live sender speaks every tick (0.5 s)
                    self._leader.execute(f"SET idle_session_timeout = '{LEADER_SILENCE}s'")
                if self._leading:
                    self._leader.execute("SELECT 1")  # still connected: the lock is still ours
                else:
                    row = self._leader.execute(_OUTBOX_LOCK).fetchone()
                    self._leading = bool(row and row[0])
            except psycopg.Error:  # the session is gone, and the lock with it: ask again next time
                self._drop_leader()
            return self._leading

    def _drop_leader(self) -> None:
        if self._leader is not None:
            with contextlib.suppress(psycopg.Error):
                self._leader.close()
        self._leader, self._leading = None, False

    def close(self) -> None:
        with self._leader_lock:
            self._drop_leader()  # another replica's worker takes the outbox on its next tick
        self._pool.close()

    @contextlib.contextmanager
    def _errors(self, kind: type[LogError]) -> Iterator[None]:
        with translated(kind, f"the rollback records at {self.path}"):
            yield
