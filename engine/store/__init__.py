"""Where decisions are kept: a small interface, so PostgreSQL and Redis can sit beside SQLite."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Restart:
    test_id: str
    at: float
    reason: str
    after_seq: int  # decisions up to this seq belong to the previous run of the test


class DecisionLog(Protocol):
    """Append-only decision log. Implementations must be safe to call from several threads."""

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

    def tests(self) -> list[str]: ...

    def restart(self, test_id: str, reason: str, at: float) -> Restart: ...

    def last_restart(self, test_id: str) -> Restart | None: ...

    def evidence(self, test_id: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
