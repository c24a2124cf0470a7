"""The decision log's hash chain, pure: each record's hash covers its stored columns and the previous hash.

A record's hash is SHA-256 (hex) over its chained columns (CHAINED, seq first) and its prev_hash,
each encoded as its SQLite storage class (`i` integer, `r` real, `t` text, `b` blob, `n` null), the
byte length of its value, `:` and the value: integers in decimal, reals as Python's shortest
round-trip repr, text as UTF-8 (the snapshot and decision JSON exactly as stored). Lengths make
the encoding unambiguous, so no two different records share one; the first prev_hash is GENESIS.
Editing, deleting, reordering or inserting a row breaks the chain at that row, which `verify`
finds and names. Anyone who can rewrite the whole file can also rewrite the chain: keep the head
(`abguard audit verify` prints it) somewhere else to compare with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

GENESIS = "0" * 64
CHAINED = (
    "seq",
    "decision_id",
    "test_id",
    "event_time",
    "received_at",
    "action",
    "policy_name",
    "policy_version",
    "policy_digest",
    "snapshot",
    "decision",
)

EDITED, DELETED, REORDERED, INSERTED, BROKEN = (
    "content edited",
    "record deleted",
    "reordered",
    "inserted",
    "chain link broken",
)


def _field(value: object) -> bytes:
    """One value, tagged with its storage class and length-prefixed."""
    if value is None:
        tag, data = b"n", b""
    elif isinstance(value, bool | int):
        tag, data = b"i", str(int(value)).encode()
    elif isinstance(value, float):
        tag, data = b"r", repr(value).encode()
    elif isinstance(value, bytes):
        tag, data = b"b", value
    else:
        tag, data = b"t", str(value).encode("utf-8", "surrogatepass")
    return tag + str(len(data)).encode() + b":" + data


def encode(columns: Sequence[object], prev_hash: str | None) -> bytes:
    """The canonical bytes a record's hash is taken over: its CHAINED columns as stored, then prev_hash."""
    return b"".join(_field(value) for value in (*columns, prev_hash))


def record_hash(columns: Sequence[object], prev_hash: str) -> str:
    """The hash a record with these stored columns (CHAINED order) carries after `prev_hash`."""
    return hashlib.sha256(encode(columns, prev_hash)).hexdigest()


@dataclass(frozen=True)
class Row:
    """A decision row as stored: its CHAINED columns, prev_hash and hash (None when missing)."""

    columns: tuple[object, ...]
    prev_hash: str | None
    hash: str | None

    @property
    def seq(self) -> int:
        return cast(int, self.columns[0])  # INTEGER PRIMARY KEY: always an integer

    @property
    def test_id(self) -> object:
        return self.columns[2]

    @property
    def event_time(self) -> object:
        return self.columns[3]


@dataclass(frozen=True)
class Link:
    """A row's place in the chain without its content: enough to tell where a moved row came from."""

    seq: int
    prev_hash: str | None
    hash: str | None


@dataclass(frozen=True)
class Break:
    """The first record where the chain does not hold: which, what is wrong (a kind word) and why."""

    seq: int
    test_id: object  # None for records deleted at the end of the log
    event_time: object
    kind: str
    detail: str


@dataclass(frozen=True)
class Verdict:
    records: int  # records verified before the break (all of them when intact)
    head: str  # hash of the last verified record, GENESIS for none
    broken: Break | None


def verify(rows: Iterable[Row], links: Sequence[Link], counter: int) -> Verdict:
    """Walk `rows` in seq order; `links` are every row's, `counter` the highest seq the log ever gave out."""
    expected, last_seq = GENESIS, 0
    walked: list[Row] = []  # verified rows, content dropped
    seen: dict[str, int] = {}  # hash -> index in walked
    remaining = iter(rows)
    for row in remaining:
        if (
            row.hash is not None
            and row.prev_hash == expected
            and row.seq == last_seq + 1
            and record_hash(row.columns, expected) == row.hash
        ):
            seen[row.hash] = len(walked)
            walked.append(Row(row.columns[:4], row.prev_hash, row.hash))
            expected, last_seq = row.hash, row.seq
            continue
        found = _diagnose(row, next(remaining, None), walked, seen, links, counter)
        return Verdict(len(walked), expected, found)
    if counter > last_seq:
        missing = _span(last_seq + 1, counter)
        after = f"after seq {last_seq}" if last_seq else "from the start"
        detail = f"{missing} {after} missing at the end of the log (its sequence counter reached {counter})"
        return Verdict(len(walked), expected, Break(last_seq + 1, None, None, DELETED, detail))
    return Verdict(len(walked), expected, None)


def _diagnose(
    row: Row, following: Row | None, walked: list[Row], seen: dict[str, int], links: Sequence[Link], counter: int
) -> Break:
    """Why the chain breaks at `row` (the first row that does not follow `walked`), naming the first bad record."""

    def found(at: Row, kind: str, detail: str) -> Break:
        return Break(at.seq, at.test_id, at.event_time, kind, detail)

    last_seq = walked[-1].seq if walked else 0
    expected = (walked[-1].hash if walked else None) or GENESIS
    if row.hash is None or row.prev_hash is None:
        return found(row, INSERTED, "it has no chain hash: it was not written by abguard")
    linked = seen.get(row.prev_hash)
    if linked is not None and linked < len(walked) - 1:
        first = walked[linked + 1]
        detail = f"seq {row.seq} links to seq {walked[linked].seq}: the records after that up to it were inserted"
        return found(first, INSERTED, detail)
    rest = encode(row.columns[1:], row.prev_hash)
    top = max([counter, row.seq, *(link.seq for link in links)])
    own = next((seq for seq in (row.seq, *range(1, top + 1)) if _hash_at(seq, rest) == row.hash), None)
    hashes = {link.hash for link in links if link.hash is not None}
    if own == row.seq:  # the row is as it was written, but not where it was written
        if row.seq > last_seq + 1:
            return found(row, DELETED, f"{_span(last_seq + 1, row.seq - 1)} before it is missing")
        if row.prev_hash in hashes:
            later = next(link.seq for link in links if link.hash == row.prev_hash)
            return found(row, REORDERED, f"it was written after the record now at seq {later}")
        return found(row, BROKEN, "its prev_hash matches no record: the chain was rewritten from here")
    if own is not None:  # written under another seq
        if own > row.seq and row.prev_hash not in hashes:
            return found(
                row, DELETED, f"it was written as seq {own}: a record before it was deleted and the rest renumbered"
            )
        return found(row, REORDERED, f"it was written as seq {own}")
    for link in links:  # its content is another record's: the contents were swapped
        if (
            link.seq != row.seq
            and link.hash is not None
            and link.prev_hash is not None
            and record_hash((link.seq, *row.columns[1:]), link.prev_hash) == link.hash
        ):
            return found(row, REORDERED, f"it holds the content written as seq {link.seq}")
    true_hash = record_hash(row.columns, row.prev_hash)
    if following is not None and following.prev_hash == true_hash:
        return found(row, BROKEN, "its stored hash was changed")
    next_links = following is None or following.prev_hash == row.hash
    if row.prev_hash != expected and record_hash(row.columns, expected) == row.hash:
        return found(row, BROKEN, f"its prev_hash was changed (seq {last_seq} has {expected[:12]}...)")
    if next_links:
        return found(row, EDITED, "its hash does not match its content")
    return found(row, INSERTED, "its hash matches neither its content nor the next record's link")


def _hash_at(seq: int, rest: bytes) -> str:
    return hashlib.sha256(_field(seq) + rest).hexdigest()


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"
