"""Where decisions are kept: a small interface, so PostgreSQL and Redis can sit beside SQLite."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Record:
    """One appended decision with what produced it."""

    seq: int
    test_id: str
    event_time: float  # the snapshot's timestamp, seconds since the epoch
    received_at: float  # wall clock when the service received it
    snapshot: dict[str, Any]
    decision: dict[str, Any]
    prev_hash: str = ""  # the hash chain (engine/store/chain.py): the previous record's hash
    hash: str = ""  # this record's, over its stored columns and prev_hash ("" for a row written before the chain)


@dataclass(frozen=True)
class Restart:
    test_id: str
    at: float
    reason: str
    after_seq: int  # decisions up to this seq belong to the previous run of the test


@dataclass(frozen=True)
class Checkpoint:
    """A test's engine state as it was right after decision `seq`, so a restart replays only what followed."""

    test_id: str
    seq: int
    policy_digest: str  # the state is only valid under the policy that built it
    format: int  # the state's layout id (engine/state/layout.LAYOUT)
    state: bytes


@dataclass(frozen=True)
class BadRecord:
    """A stored row that cannot be read back as a Record: left out of every read, reported once."""

    seq: int
    test_id: str
    why: str


class LogError(RuntimeError):
    """The decision log cannot be used right now (disk full, read-only, I/O error): a retry may work."""


STATE_KEY_BYTES = 32  # the least a key sealing states may hold (engine/state/keys.py)


def stored_key(value: object, where: str) -> bytes:
    """The state key a log read back, which must be bytes of a key's size: anything else is not used."""
    if not isinstance(value, bytes | memoryview) or len(value) < STATE_KEY_BYTES:
        raise LogError(f"the state key kept in {where} (table secrets) is not a key: delete that row to make a new one")
    return bytes(value)


class LogWriteError(LogError):
    """The decision log cannot be written: nothing of the failed write was kept."""


class LogOpenError(LogError):
    """The decision log cannot be opened; the message names the path and the fix."""


class DecisionLog(Protocol):
    """Append-only decision log. Implementations must be safe to call from several threads.

    Failures of the storage raise LogError (LogWriteError for writes). Reads that return
    records leave out rows that cannot be decoded and report each once to `on_bad_record`.
    """

    on_bad_record: Callable[[BadRecord], None] | None

    def exclusive(self, test_ids: Sequence[str]) -> AbstractContextManager[dict[str, int] | None]:
        """One write transaction holding these tests against every other writer of the log.

        Appends and reads inside it are part of it; leaving it commits them all at once (LogWriteError if
        that fails: none was kept), an exception rolls them back. It yields each test's version (how many
        writes the log holds of it, counted by appends inside it too), or None when this process is the
        log's only writer and its own memory is always current.
        """
        ...

    def append(
        self,
        snapshot: dict[str, Any],
        decision: dict[str, Any],
        event_time: float,
        received_at: float,
        evidence: dict[str, Any] | None,
    ) -> Record: ...

    def find(self, test_id: str, event_time: float) -> Record | None:
        """The decision recorded for this test and snapshot time, if any (a restart does not forget it)."""
        ...

    def last(self, test_id: str) -> Record | None: ...

    def page(self, test_id: str, limit: int, before_seq: int | None) -> list[Record]:
        """Decisions of a test, newest first, with seq below `before_seq` when given."""
        ...

    def count(self, test_id: str) -> int: ...

    def since_restart(self, test_id: str, from_time: float) -> list[Record]:
        """Records of the test's current run with event time >= from_time, oldest first."""
        ...

    def after(self, test_id: str, seq: int) -> list[Record]:
        """Records of the test with seq above `seq`, oldest first."""
        ...

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep this as the test's checkpoint (only the latest is kept); LogWriteError if it cannot be written."""
        ...

    def checkpoint(self, test_id: str) -> Checkpoint | None:
        """The test's latest checkpoint, if any."""
        ...

    def state_key(self, generate: Callable[[], bytes]) -> bytes:
        """The key that seals states outside the process (engine/state), kept in the log's own database:
        made with `generate` by the first process that asks, the same for every process after it."""
        ...

    def tests(self) -> list[str]: ...

    def version(self, test_id: str) -> int | None:
        """How many writes the log holds of this test, or None when this process is its only writer."""
        ...

    def restart(self, test_id: str, reason: str, at: float) -> Restart: ...

    def touch(self, test_id: str) -> None:
        """Count a change of the test kept outside the log (a manual rollback's record) as a write of it,
        so the other replicas holding it load it again; nothing for a log with one writer."""
        ...

    def last_restart(self, test_id: str) -> Restart | None: ...

    def evidence(self, test_id: str) -> list[dict[str, Any]]: ...

    def probe(self) -> None:
        """A write of a decision's size that leaves nothing behind; LogWriteError while writes fail."""
        ...

    def close(self) -> None:
        """Release the log; LogWriteError if its last flush failed (it is closed all the same)."""
        ...


@dataclass(frozen=True)
class SharedState:
    """One test's state as a shared cache (Redis) holds it, and what it is good for."""

    version: int
    policy_digest: str
    format: int
    state: bytes
    last_hash: str  # of the test's last logged decision: the entry is only good for that log
