"""The embedded decision log: SQLite in the data directory, WAL mode, one writer lock.

SQLite's failures become the store's: LogOpenError (with the path and the fix) when the
log cannot be opened, LogWriteError when it cannot be written (disk full, read-only),
LogError when it cannot be read. Rows are decoded one by one: a row that is not a record
(its JSON broken or short of fields) is left out of every read and reported once.

Each decision row carries prev_hash and hash (engine/store/chain.py), computed in the insert's
transaction from the last row's hash; a log written before the chain gets both columns, and the
chain over its rows, the first time it is opened.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from . import BadRecord, Checkpoint, LogError, LogOpenError, LogWriteError, Record, Restart, stored_key
from .chain import CHAINED, GENESIS, record_hash
from .rows import CHAIN_PAGE, RecordReads

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
    decision TEXT NOT NULL,
    prev_hash TEXT,
    hash TEXT
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
CREATE TABLE IF NOT EXISTS checkpoints (
    test_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    policy_digest TEXT NOT NULL,
    format INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rollback_evidence (
    seq INTEGER NOT NULL REFERENCES decisions (seq),
    test_id TEXT NOT NULL,
    evidence TEXT NOT NULL
);
"""


_CHAINED = ", ".join(CHAINED)
_INSERT_DECISION = f"INSERT INTO decisions ({_CHAINED}, prev_hash, hash) VALUES ({', '.join('?' * (len(CHAINED) + 2))})"


PROBE_BYTES = 8192  # a probe writes more than a logged decision takes (about 3 KB), then removes it


class SqliteLog(RecordReads):
    """DecisionLog on one SQLite file; `path` ':memory:' for a throwaway log."""

    def __init__(self, path: str | Path, on_bad_record: Callable[[BadRecord], None] | None = None) -> None:
        self.path = str(path)
        self.on_bad_record = on_bad_record
        self._reported: set[int] = set()
        self._lock = threading.RLock()  # re-entered by the reads and writes inside exclusive()
        self._closed = False
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as error:
            raise LogOpenError(_open_problem(self.path, error)) from error
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            self._db.executescript(SCHEMA)
            _chain_existing(self._db)
        except sqlite3.Error as error:
            self._db.close()
            raise LogOpenError(_open_problem(self.path, error)) from error

    @classmethod
    def in_dir(cls, data_dir: str | Path, on_bad_record: Callable[[BadRecord], None] | None = None) -> SqliteLog:
        folder = Path(data_dir)
        if folder.exists() and not folder.is_dir():
            raise LogOpenError(f"the data folder {folder} is a file, not a folder: remove it or choose another folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file" if blocker is not None else error.strerror
            raise LogOpenError(
                f"cannot create the data folder {folder}: {why}: choose a folder this user can create and write"
            ) from error
        return cls(folder / "decisions.sqlite3", on_bad_record)

    # --- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self, test_ids: Sequence[str]) -> Iterator[dict[str, int] | None]:
        """One SQLite write transaction (group commit); this process is the file's only writer, so no versions."""
        with self._writing() as db, _transaction(db, "BEGIN IMMEDIATE"):
            yield None

    def append(
        self,
        snapshot: dict[str, Any],
        decision: dict[str, Any],
        event_time: float,
        received_at: float,
        evidence: dict[str, Any] | None,
    ) -> Record:
        policy = decision["policy"]
        version = policy["version"]
        row = (  # CHAINED after seq, each as SQLite stores it, so the hash is over the stored values
            decision["decision_id"],
            decision["test_id"],
            float(event_time),
            float(received_at),
            decision["action"],
            policy["name"],
            int(version) if isinstance(version, float) and version.is_integer() else version,
            policy["digest"],
            orjson.dumps(snapshot).decode(),
            orjson.dumps(decision).decode(),
        )
        with self._writing() as db, _transaction(db, "BEGIN IMMEDIATE"):  # the last hash cannot move under us
            seq, prev_hash = _next_link(db)
            digest = record_hash((seq, *row), prev_hash)
            db.execute(_INSERT_DECISION, (seq, *row, prev_hash, digest))
            if evidence is not None:
                db.execute(
                    "INSERT INTO rollback_evidence (seq, test_id, evidence) VALUES (?,?,?)",
                    (seq, decision["test_id"], orjson.dumps(evidence).decode()),
                )
        return Record(seq, decision["test_id"], event_time, received_at, snapshot, decision, prev_hash, digest)

    def restart(self, test_id: str, reason: str, at: float) -> Restart:
        with self._writing() as db:
            row = db.execute("SELECT COALESCE(MAX(seq), 0) FROM decisions").fetchone()
            after = int(row[0])
            db.execute(
                "INSERT INTO restarts (test_id, at, reason, after_seq) VALUES (?,?,?,?)", (test_id, at, reason, after)
            )
        return Restart(test_id, at, reason, after)

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints (test_id, seq, policy_digest, format, state) VALUES (?,?,?,?,?)",
                (checkpoint.test_id, checkpoint.seq, checkpoint.policy_digest, checkpoint.format, checkpoint.state),
            )

    def state_key(self, generate: Callable[[], bytes]) -> bytes:
        """Refused inside exclusive(): a key made in a transaction that rolls back would seal states for nothing."""
        with self._writing() as db:
            if db.in_transaction:
                raise LogWriteError(
                    "the state key is read or made outside a decision's transaction: ask again after it"
                )
            db.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES ('state_key', ?)", (generate(),))
            row = db.execute("SELECT value FROM secrets WHERE name = 'state_key'").fetchone()
        return stored_key(row[0] if row else None, self.path)

    def probe(self) -> None:
        """Commit a row larger than a decision and its removal: on a full disk only a commit fails
        (a rolled-back transaction never leaves the page cache), so the probe commits."""
        with self._writing() as db, _transaction(db, "BEGIN IMMEDIATE"):
            cursor = db.execute(
                "INSERT INTO restarts (test_id, at, reason, after_seq) VALUES ('', 0, zeroblob(?), 0)", (PROBE_BYTES,)
            )
            db.execute("DELETE FROM restarts WHERE rowid = ?", (cursor.lastrowid,))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            problem = None
            try:
                row = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if row and row[0]:
                    problem = "the log was busy"
            except (sqlite3.DatabaseError, OSError) as error:
                problem = str(error)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
        if problem is not None:
            raise LogWriteError(
                f"the checkpoint of {self.path} failed: {problem}; its -wal file keeps every decision"
                " and SQLite replays it on the next start"
            )

    # --- reading ----------------------------------------------------------------------------
    def checkpoint(self, test_id: str) -> Checkpoint | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT test_id, seq, policy_digest, format, state FROM checkpoints WHERE test_id = ?", (test_id,)
            ).fetchone()
        if row is None or not isinstance(row[4], bytes) or not isinstance(row[1], int):
            return None
        return Checkpoint(str(row[0]), int(row[1]), str(row[2]), int(row[3]), bytes(row[4]))

    def touch(self, test_id: str) -> None:
        """Nothing: this process is the file's only writer."""

    def version(self, test_id: str) -> int | None:
        """None: this process is the file's only writer, so the state it holds is always current."""
        return None

    def tests(self) -> list[str]:
        with self._reading() as db:
            rows = db.execute("SELECT DISTINCT test_id FROM decisions ORDER BY test_id").fetchall()
        return [str(row[0]) for row in rows]

    def last_restart(self, test_id: str) -> Restart | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT test_id, at, reason, after_seq FROM restarts WHERE test_id = ? ORDER BY rowid DESC LIMIT 1",
                (test_id,),
            ).fetchone()
        return Restart(row[0], row[1], row[2], row[3]) if row else None

    # --- auditing ---------------------------------------------------------------------------
    def chain_counter(self) -> int:
        """The highest seq the log ever gave out (SQLite's AUTOINCREMENT counter): rows above the last were deleted."""
        with self._reading() as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
        return int(row[0]) if row else 0

    # --- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _rows(self, sql: str, args: tuple[Any, ...]) -> Iterator[Iterable[tuple[Any, ...]]]:
        """A cursor over one query, closed after: that ends the read, so a checkpoint is not held up by it."""
        with self._reading() as db:
            cursor = db.execute(sql, args)
            try:
                yield cursor
            finally:
                cursor.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.IntegrityError:  # a bug of ours, not a fault of the disk
                raise
            except (sqlite3.DatabaseError, OSError) as error:
                raise LogWriteError(f"the decision log cannot be written: {error}") from error

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except (sqlite3.DatabaseError, OSError) as error:
                raise LogError(f"the decision log cannot be read: {error}") from error


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """A transaction, or part of the one already open (exclusive()): that one commits."""
    if db.in_transaction:
        yield
        return
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _next_link(db: sqlite3.Connection) -> tuple[int, str]:
    """The next seq (AUTOINCREMENT's: above any ever given out) and the last row's hash, inside a write transaction."""
    last = db.execute("SELECT seq, hash FROM decisions ORDER BY seq DESC LIMIT 1").fetchone()
    counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
    top = max(int(last[0]) if last else 0, int(counter[0]) if counter else 0)
    return top + 1, str(last[1]) if last and last[1] is not None else GENESIS


def _chain_existing(db: sqlite3.Connection) -> None:
    """A log written before the chain: add prev_hash and hash, and chain its rows in seq order, in one transaction."""
    if _has_chain(db):
        return
    with _transaction(db, "BEGIN IMMEDIATE"):
        if _has_chain(db):  # another process upgraded it meanwhile
            return
        db.execute("ALTER TABLE decisions ADD COLUMN prev_hash TEXT")
        db.execute("ALTER TABLE decisions ADD COLUMN hash TEXT")
        prev_hash, after = GENESIS, -(2**62)
        while True:
            rows = db.execute(
                f"SELECT {_CHAINED} FROM decisions WHERE seq > ? ORDER BY seq LIMIT ?", (after, CHAIN_PAGE)
            ).fetchall()
            links = []
            for row in rows:
                digest = record_hash(row, prev_hash)
                links.append((prev_hash, digest, row[0]))
                prev_hash = digest
            db.executemany("UPDATE decisions SET prev_hash = ?, hash = ? WHERE seq = ?", links)
            if len(rows) < CHAIN_PAGE:
                return
            after = int(rows[-1][0])


def _has_chain(db: sqlite3.Connection) -> bool:
    return "hash" in {str(column[1]) for column in db.execute("PRAGMA table_info(decisions)")}


def _open_problem(path: str, error: sqlite3.Error) -> str:
    """One line: what is wrong with the log's file at `path`, and what to do about it."""
    name = getattr(error, "sqlite_errorname", "")
    where = Path(path)
    if where.is_dir():
        return f"{path} is a folder, not the decision log's SQLite file: move it aside"
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return f"{path} is not a readable SQLite database ({error}): move it aside to start a new log, or restore it"
    if name.startswith("SQLITE_FULL"):
        return f"cannot write {path} ({error}): free space on its disk"
    if name.startswith("SQLITE_READONLY"):
        return f"cannot write {path} ({error}): make the file and its folder writable for this user"
    if name.startswith("SQLITE_CANTOPEN"):
        folder = where.parent
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as cannot:
            return f"cannot create files in {folder} ({cannot.strerror}): choose a folder this user can write"
        return f"cannot open {path} ({error}): check that it is a file this user can read and write"
    return f"cannot open {path} ({error}): move it aside to start a new log, or restore it"
