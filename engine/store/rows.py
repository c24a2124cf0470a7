"""Stored decision rows back into Records, for every backend: a row that is not a record says why."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import orjson

from ..contract import Decision
from . import BadRecord, Record, Restart
from .chain import CHAINED, Link, Row

COLUMNS = "seq, test_id, event_time, received_at, snapshot, decision, prev_hash, hash"
DECISION_FIELDS = frozenset(f.name for f in dataclasses.fields(Decision))
EXCERPT = 60  # characters of a bad column quoted in a report
CHAIN_PAGE = 500  # rows read at once while walking the chain


class Undecodable(ValueError):
    """A row that is not a record; the message says why."""


def decode(row: tuple[Any, ...]) -> Record:
    seq, test_id, event_time, received_at, snapshot_text, decision_text, prev_hash, digest = row
    if not isinstance(event_time, (int, float)) or not isinstance(received_at, (int, float)):
        raise Undecodable(
            f"event_time {event_time!r:.{EXCERPT}} or received_at {received_at!r:.{EXCERPT}} is not a number"
        )
    snapshot = json_object(snapshot_text, "snapshot")
    decision = json_object(decision_text, "decision")
    missing = DECISION_FIELDS - decision.keys()
    if missing:
        raise Undecodable(f"the decision lacks {', '.join(sorted(missing))}")
    return Record(
        int(seq), str(test_id), float(event_time), float(received_at), snapshot, decision, prev_hash or "", digest or ""
    )


def json_object(text: Any, column: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError) as error:
        raise Undecodable(f"the {column} column is not JSON ({error}): {str(text)[:EXCERPT]!r}") from None
    if not isinstance(value, dict):
        raise Undecodable(f"the {column} column is not a JSON object: {str(text)[:EXCERPT]!r}")
    return value


class RecordReads:
    """The reads both SQL logs share, in `?` placeholders; a backend gives `_rows` (a cursor over one
    query, in its own connection discipline), `last_restart` and its `on_bad_record` hook."""

    on_bad_record: Callable[[BadRecord], None] | None
    _reported: set[int]
    PLACEHOLDER = "?"

    def _rows(self, sql: str, args: tuple[Any, ...]) -> AbstractContextManager[Iterable[tuple[Any, ...]]]:
        raise NotImplementedError

    def last_restart(self, test_id: str) -> Restart | None:
        raise NotImplementedError

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._rows(sql, args) as rows:
            return [tuple(row) for row in rows]

    def find(self, test_id: str, event_time: float) -> Record | None:
        rows = self._records("WHERE test_id = ? AND event_time = ? ORDER BY seq DESC", (test_id, event_time), limit=1)
        return rows[0] if rows else None

    def last(self, test_id: str) -> Record | None:
        rows = self._records("WHERE test_id = ? ORDER BY seq DESC", (test_id,), limit=1)
        return rows[0] if rows else None

    def page(self, test_id: str, limit: int, before_seq: int | None) -> list[Record]:
        bound = before_seq if before_seq is not None else 2**62
        return self._records("WHERE test_id = ? AND seq < ? ORDER BY seq DESC", (test_id, bound), limit=limit)

    def count(self, test_id: str) -> int:
        return int(self._query("SELECT COUNT(*) FROM decisions WHERE test_id = ?", (test_id,))[0][0])

    def since_restart(self, test_id: str, from_time: float) -> list[Record]:
        return self._records(
            "WHERE test_id = ? AND seq > ? AND event_time >= ? ORDER BY seq", (test_id, self._floor(test_id), from_time)
        )

    def after(self, test_id: str, seq: int) -> list[Record]:
        return self._records("WHERE test_id = ? AND seq > ? ORDER BY seq", (test_id, seq))

    def evidence(self, test_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT seq, evidence FROM rollback_evidence WHERE test_id = ? ORDER BY seq", (test_id,))
        out, bad = [], []
        for seq, text in rows:
            try:
                out.append(json_object(text, "evidence"))
            except Undecodable as error:
                bad.append(BadRecord(int(seq), test_id, str(error)))
        self._report(bad)
        return out

    # --- auditing ---------------------------------------------------------------------------
    def chain_rows(self) -> Iterator[Row]:
        """Every decision row as stored, in seq order, a page at a time (nothing is held between pages)."""
        after = -(2**62)
        while True:
            rows = self._query(
                f"SELECT {', '.join(CHAINED)}, prev_hash, hash FROM decisions WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, CHAIN_PAGE),
            )
            for row in rows:
                yield Row(tuple(row[:-2]), row[-2], row[-1])
            if len(rows) < CHAIN_PAGE:
                return
            after = int(rows[-1][0])

    def chain_links(self) -> list[Link]:
        """Every row's seq, prev_hash and hash, in seq order."""
        rows = self._query("SELECT seq, prev_hash, hash FROM decisions ORDER BY seq")
        return [Link(int(seq), prev, digest) for seq, prev, digest in rows]

    def rollbacks(self, test_id: str | None, since: float | None) -> list[Record]:
        """Decisions whose action rolls back, oldest first, of one test or all, with event time >= since."""
        where = "WHERE action IN ('rollback', 'immediate_rollback')"
        args: tuple[Any, ...] = ()
        if test_id is not None:
            where, args = f"{where} AND test_id = ?", (*args, test_id)
        if since is not None:
            where, args = f"{where} AND event_time >= ?", (*args, since)
        return self._records(f"{where} ORDER BY seq", args)

    # --- helpers ----------------------------------------------------------------------------
    def _floor(self, test_id: str) -> int:
        restart = self.last_restart(test_id)
        return restart.after_seq if restart else 0

    def _records(self, where: str, args: tuple[Any, ...], limit: int | None = None) -> list[Record]:
        """Decoded records in the query's order, `limit` at most, read `limit` rows at a time; undecodable
        rows are left out and reported, and the next page read, so a bad row never takes a good one's place."""
        sql = f"SELECT {COLUMNS} FROM decisions {where}"  # `where` is our own text
        out: list[Record] = []
        bad: list[BadRecord] = []
        offset = 0
        while True:
            page = sql if limit is None else f"{sql} LIMIT {int(limit)} OFFSET {offset}"
            rows = self._query(page, args)
            for row in rows:  # row by row: a bad row costs itself, not the query
                try:
                    out.append(decode(row))
                except Undecodable as error:
                    bad.append(BadRecord(int(row[0]), str(row[1]), str(error)))
            if limit is None or len(out) >= limit or len(rows) < limit:
                break
            offset += limit
        self._report(bad)
        return out[:limit] if limit is not None else out

    def _report(self, bad: list[BadRecord]) -> None:
        for record in bad:
            if record.seq in self._reported:
                continue
            self._reported.add(record.seq)
            if self.on_bad_record is not None:
                self.on_bad_record(record)
