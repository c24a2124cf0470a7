"""The shared decision log: PostgreSQL, for several replicas behind one address.

Every replica appends to one hash chain (engine/store/chain.py, the same encoding as SQLite's):
the chain head is a row each appending transaction locks, so seq order is chain order. A test's
writes are ordered across replicas by exclusive(): a transaction-scoped advisory lock per test,
taken in sorted order (two batches never wait on each other in a cycle), and the test's version
(`tests.version`, bumped by every append and restart), which tells a replica whether the state it
holds in memory is still the newest. A snapshot is logged once per test and time (a unique
index): a resend is answered from the log whichever replica gets it.

Connections come from a psycopg pool. A statement that fails because the server is away, the
connection broke or the disk is full raises LogWriteError (writes) or LogError (reads): nothing
of a failed transaction is kept, and the caller answers UNAVAILABLE. The tables live in the
connection's schema (`?options=-csearch_path%3Dname` in the URL chooses another).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from . import BadRecord, Checkpoint, LogError, LogOpenError, LogWriteError, Record, Restart, stored_key
from .chain import CHAINED, GENESIS, record_hash
from .rows import RecordReads

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS decisions (
    seq BIGINT PRIMARY KEY,
    decision_id TEXT NOT NULL,
    test_id TEXT NOT NULL,
    event_time DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    policy_name TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    policy_digest TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    decision TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_test ON decisions (test_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS decisions_once ON decisions (test_id, event_time);
CREATE TABLE IF NOT EXISTS chain_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, '{GENESIS}') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS tests (test_id TEXT PRIMARY KEY, version BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS restarts (
    id BIGSERIAL PRIMARY KEY,
    test_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    after_seq BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS restarts_by_test ON restarts (test_id, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    test_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    policy_digest TEXT NOT NULL,
    format INTEGER NOT NULL,
    state BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS rollback_evidence (seq BIGINT NOT NULL, test_id TEXT NOT NULL, evidence TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rollback_evidence_by_test ON rollback_evidence (test_id, seq);
CREATE TABLE IF NOT EXISTS probes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
"""
# The pool logs every failed reconnection; the service says what matters (log_unwritable, then
# log_writable) in its own lines, so without a handler configured for it these stay quiet.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
SCHEMA_LOCK = 7_310_011  # advisory lock id: replicas starting together create the tables one at a time
_PLACES = ", ".join(["%s"] * (len(CHAINED) + 2))
_INSERT = f"INSERT INTO decisions ({', '.join(CHAINED)}, prev_hash, hash) VALUES ({_PLACES})"
PROBE_BYTES = 8192
# SQLSTATE classes that are the server's or the network's trouble, not ours: a retry may work
RETRYABLE = (psycopg.OperationalError, psycopg.errors.DiskFull, psycopg.errors.InsufficientResources)


@dataclass
class _Open:
    """The transaction exclusive() holds on this thread."""

    conn: psycopg.Connection[Any]
    heads: dict[str, int]
    chain: tuple[int, str] | None = None  # (seq, hash) of the chain head once an append locked it
    bumped: dict[str, int] = field(default_factory=dict)  # tests whose version this transaction raised
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # appended, not yet sent: one round trip for all
    evidence: list[tuple[Any, ...]] = field(default_factory=list)


class PostgresLog(RecordReads):
    """DecisionLog on PostgreSQL, shared by every replica pointing at the same database and schema."""

    def __init__(
        self,
        url: str,
        on_bad_record: Callable[[BadRecord], None] | None = None,
        pool_size: int = 8,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.on_bad_record = on_bad_record
        self._reported: set[int] = set()
        self._local = threading.local()
        self._timeout = timeout
        try:  # one plain connection first: its error says why (refused, no such database, auth)
            first = psycopg.connect(bounded(url), autocommit=True, connect_timeout=max(1, int(timeout)))
            with first as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(SCHEMA)
        except psycopg.Error as error:
            raise LogOpenError(f"cannot open the decision log at {safe_url(url)}: {one_line(error)}") from error
        self._pool = open_pool(url, "abguard-log", pool_size, timeout, "the decision log")

    @property
    def path(self) -> str:
        """Where the log is, for messages (the URL without its password)."""
        return safe_url(self.url)

    # --- the exclusive transaction ------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self, test_ids: Sequence[str]) -> Iterator[dict[str, int] | None]:
        if getattr(self._local, "open", None) is not None:
            raise RuntimeError("exclusive() does not nest")
        ordered = sorted(set(test_ids))
        with self._errors(LogWriteError), self._pool.connection() as conn:
            try:
                with conn.transaction():
                    # one statement, the locks taken in sorted order: no cycle between two batches
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(t, 0))"
                        " FROM (SELECT t FROM unnest(%s::text[]) AS t ORDER BY t) AS sorted",
                        (ordered,),
                    )
                    rows = conn.execute(
                        "SELECT test_id, version FROM tests WHERE test_id = ANY(%s)", (ordered,)
                    ).fetchall()
                    opened = _Open(conn, dict.fromkeys(ordered, 0) | {str(t): int(v) for t, v in rows})
                    self._local.open = opened
                    yield opened.heads
                    self._finish(opened)
            finally:
                self._local.open = None

    def _flush(self, opened: _Open) -> None:
        """Send the appended rows (a batch's, in one pipelined executemany) before anything reads."""
        if opened.rows:
            with opened.conn.cursor() as cursor:
                cursor.executemany(_INSERT, opened.rows)
            opened.rows.clear()
        if opened.evidence:
            with opened.conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO rollback_evidence (seq, test_id, evidence) VALUES (%s, %s, %s)", opened.evidence
                )
            opened.evidence.clear()

    def _finish(self, opened: _Open) -> None:
        """Inside the transaction, last: the rows, the chain head and the versions of what it wrote."""
        self._flush(opened)
        if opened.chain is not None:
            opened.conn.execute("UPDATE chain_head SET seq = %s, hash = %s WHERE id = 1", opened.chain)
        if opened.bumped:
            with opened.conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO tests (test_id, version) VALUES (%s, %s)"
                    " ON CONFLICT (test_id) DO UPDATE SET version = EXCLUDED.version",
                    list(opened.bumped.items()),
                )

    # --- writing ----------------------------------------------------------------------------
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
            float(event_time),
            float(received_at),
            decision["action"],
            policy["name"],
            int(policy["version"]),
            policy["digest"],
            orjson.dumps(snapshot).decode(),
            orjson.dumps(decision).decode(),
        )
        with self._writing() as opened:
            conn = opened.conn
            if opened.chain is None:  # the first append of this transaction takes the chain head
                head = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE").fetchone()
                opened.chain = (int(head[0]), str(head[1])) if head else (0, GENESIS)
            last_seq, prev_hash = opened.chain
            seq = last_seq + 1
            digest = record_hash((seq, *row), prev_hash)
            opened.rows.append((seq, *row, prev_hash, digest))
            if evidence is not None:
                opened.evidence.append((seq, decision["test_id"], orjson.dumps(evidence).decode()))
            opened.chain = (seq, digest)
            self._bump(opened, decision["test_id"])
        return Record(seq, decision["test_id"], event_time, received_at, snapshot, decision, prev_hash, digest)

    def restart(self, test_id: str, reason: str, at: float) -> Restart:
        with self._writing() as opened:
            row = opened.conn.execute("SELECT seq FROM chain_head WHERE id = 1").fetchone()
            after = opened.chain[0] if opened.chain is not None else int(row[0]) if row else 0
            opened.conn.execute(
                "INSERT INTO restarts (test_id, at, reason, after_seq) VALUES (%s, %s, %s, %s)",
                (test_id, at, reason, after),
            )
            self._bump(opened, test_id)
        return Restart(test_id, at, reason, after)

    def touch(self, test_id: str) -> None:
        with self._writing() as opened:
            self._bump(opened, test_id)

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._writing() as opened:
            opened.conn.execute(
                "INSERT INTO checkpoints (test_id, seq, policy_digest, format, state) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (test_id) DO UPDATE SET seq = EXCLUDED.seq, policy_digest = EXCLUDED.policy_digest,"
                " format = EXCLUDED.format, state = EXCLUDED.state WHERE checkpoints.seq <= EXCLUDED.seq",
                (checkpoint.test_id, checkpoint.seq, checkpoint.policy_digest, checkpoint.format, checkpoint.state),
            )

    def state_key(self, generate: Callable[[], bytes]) -> bytes:
        """In a transaction of its own, even inside exclusive(): a key must never be rolled back once used."""
        with self._errors(LogWriteError), self._pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES ('state_key', %s) ON CONFLICT (name) DO NOTHING",
                (generate(),),
            )
            row = conn.execute("SELECT value FROM secrets WHERE name = 'state_key'").fetchone()
        return stored_key(row[0] if row else None, self.path)

    def probe(self) -> None:
        """Commit a row larger than a decision, and its removal."""
        with self._writing() as opened:
            row = opened.conn.execute("INSERT INTO probes (body) VALUES (%s) RETURNING id", ("x" * PROBE_BYTES,))
            opened.conn.execute("DELETE FROM probes WHERE id = %s", (row.fetchone()[0],))  # type: ignore[index]

    def close(self) -> None:
        self._pool.close()

    def _bump(self, opened: _Open, test_id: str) -> None:
        version = opened.heads.get(test_id)
        if version is None:  # written outside exclusive(): read it under this transaction's lock
            opened.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (test_id,))
            row = opened.conn.execute("SELECT version FROM tests WHERE test_id = %s", (test_id,)).fetchone()
            version = int(row[0]) if row else 0
        opened.heads[test_id] = opened.bumped[test_id] = version + 1

    # --- reading ----------------------------------------------------------------------------
    def checkpoint(self, test_id: str) -> Checkpoint | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT test_id, seq, policy_digest, format, state FROM checkpoints WHERE test_id = %s", (test_id,)
            ).fetchone()
        if row is None:
            return None
        return Checkpoint(str(row[0]), int(row[1]), str(row[2]), int(row[3]), bytes(row[4]))

    def tests(self) -> list[str]:
        with self._reading() as conn:
            rows = conn.execute("SELECT test_id FROM tests ORDER BY test_id").fetchall()
        return [str(row[0]) for row in rows]

    def version(self, test_id: str) -> int | None:
        """How many writes the log holds of this test (0: none)."""
        with self._reading() as conn:
            row = conn.execute("SELECT version FROM tests WHERE test_id = %s", (test_id,)).fetchone()
        return int(row[0]) if row else 0

    def last_restart(self, test_id: str) -> Restart | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT test_id, at, reason, after_seq FROM restarts WHERE test_id = %s ORDER BY id DESC LIMIT 1",
                (test_id,),
            ).fetchone()
        return Restart(str(row[0]), float(row[1]), str(row[2]), int(row[3])) if row else None

    # --- auditing ---------------------------------------------------------------------------
    def chain_counter(self) -> int:
        """The highest seq the chain head ever gave out: rows above the last were deleted."""
        with self._reading() as conn:
            row = conn.execute("SELECT seq FROM chain_head WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    # --- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self) -> Iterator[_Open]:
        """The open exclusive() transaction, or a transaction of its own."""
        opened: _Open | None = getattr(self._local, "open", None)
        if opened is not None:
            yield opened
            return
        with self._errors(LogWriteError), self._pool.connection() as conn, conn.transaction():
            opened = _Open(conn, {})
            yield opened
            self._finish(opened)

    @contextlib.contextmanager
    def _rows(self, sql: str, args: tuple[Any, ...]) -> Iterator[Iterable[tuple[Any, ...]]]:
        """One query of the shared reads (written with `?`, psycopg's `%s` here)."""
        with self._reading() as conn:
            yield conn.execute(sql.replace("?", "%s"), args)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        opened: _Open | None = getattr(self._local, "open", None)
        if opened is not None:
            with self._errors(LogWriteError):
                self._flush(opened)  # a read inside the transaction sees what it appended
            yield opened.conn
            return
        with self._errors(LogError), self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _errors(self, kind: type[LogError]) -> Iterator[None]:
        with translated(kind, f"the decision log at {self.path}"):
            yield


# Every session abguard opens is bounded, so a stalled peer or a silent server never holds a call:
# a lock wait gives up (a retryable error: UNAVAILABLE) instead of queueing behind a paused replica's
# transaction; the server ends a decision-log transaction whose client went quiet, and any statement
# past a limit; TCP gives up on a server that stops acknowledging (tcp_user_timeout) or answering
# (keepalives). The lock limit leaves room for a legitimate transaction (an EvaluateBatch of 1000
# snapshots holds the chain head for about half a second).
LOCK_TIMEOUT_MS = 2_000
IDLE_IN_TRANSACTION_MS = 5_000
STATEMENT_TIMEOUT_MS = 30_000
TCP_USER_TIMEOUT_MS = 3_000


def bounded(url: str, lock_ms: int = LOCK_TIMEOUT_MS, idle_ms: int | None = IDLE_IN_TRANSACTION_MS) -> str:
    """The URL's connection string with abguard's limits; settings the URL's own `options` make win."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    limits = f"-c lock_timeout={lock_ms} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    if idle_ms is not None:
        limits += f" -c idle_in_transaction_session_timeout={idle_ms}"
    options = f"{limits} {info['options']}" if info.get("options") else limits
    return psycopg.conninfo.make_conninfo(
        url, options=options, keepalives=1, keepalives_idle=5, keepalives_interval=1, keepalives_count=3,
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
    )  # fmt: skip


def open_pool(
    url: str,
    name: str,
    size: int,
    timeout: float,
    what: str,
    check: Callable[..., Any] | None = None,
    conninfo: str | None = None,
) -> ConnectionPool[psycopg.Connection[Any]]:
    """An open pool of autocommit connections (to `conninfo`, bounded(url) by default); LogOpenError naming `what`."""
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        conninfo or bounded(url),
        min_size=1,
        max_size=size,
        timeout=timeout,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
        open=False,
        name=name,
        check=check,
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except (psycopg.Error, PoolTimeout) as error:
        pool.close()
        raise LogOpenError(f"cannot open {what} at {safe_url(url)}: {one_line(error)}") from error
    return pool


@contextlib.contextmanager
def translated(kind: type[LogError], where: str) -> Iterator[None]:
    """The server's or the network's trouble as `kind` (LogWriteError or LogError), naming `where`."""
    try:
        yield
    except LogError:
        raise
    except PoolTimeout as error:
        raise kind(f"{where} cannot be reached: {one_line(error)}") from error
    except RETRYABLE as error:
        verb = "written" if kind is LogWriteError else "read"
        raise kind(f"{where} cannot be {verb}: {one_line(error)}") from error


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def safe_url(url: str) -> str:
    """The URL without a password, for messages and logs; with its options (the schema), which tell
    two deployments on one database apart."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable URL)"
    user, host, port, name = (info.get(key, "") for key in ("user", "host", "port", "dbname"))
    options = f" (options {info['options']})" if info.get("options") else ""
    return f"postgresql://{user}@{host}:{port or 5432}/{name}{options}"
