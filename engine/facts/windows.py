"""Bounded event-time windows of whole-number sums, as immutable values.

A row added at time t lands in bucket floor(t / bucket); at time t the window holds the
buckets after floor(t / bucket) - buckets. Rows are tuples of Python integers, so sums
are exact: adding and later removing a row leaves nothing behind, however large or small
the numbers. `add` returns a new window and leaves the old one as it was, which is what
lets an evaluation step compute the next state without touching the current one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import add, sub
from typing import Any, Generic, TypeVar

from .packed import EMPTY, Packed, concat, pack, plain

Row = TypeVar("Row", bound=tuple[Any, ...])  # a NamedTuple of whole numbers, or a plain tuple of them


@dataclass(frozen=True, slots=True)
class RollingSums(Generic[Row]):
    """Sums of rows of one shape over the last `window` seconds, in `buckets` time buckets.

    The live buckets are packed (engine/facts/packed.py): `indexes` holds each live bucket's
    index, oldest first, and `rows` their summed rows end to end, `width` numbers each."""

    make: Callable[[Iterable[int]], Row]  # builds the row type from its numbers: RowType._make, or tuple
    window: float
    buckets: int
    indexes: Packed
    rows: Packed
    total: tuple[int, ...]

    @classmethod
    def empty(
        cls, make: Callable[[Iterable[int]], Row], width: int, window: float, buckets: int = 20
    ) -> RollingSums[Row]:
        return cls(make, window, buckets, EMPTY, EMPTY, (0,) * width)

    @property
    def bucket(self) -> float:
        return self.window / self.buckets

    @property
    def width(self) -> int:
        return len(self.total)

    @property
    def live(self) -> tuple[Bucket, ...]:
        """The live buckets as (index, summed row), oldest first."""
        w = self.width
        return tuple((index, tuple(self.rows[i * w : (i + 1) * w])) for i, index in enumerate(self.indexes))

    def add(self, t: float, row: Row) -> RollingSums[Row]:
        index = math.floor(t / self.bucket)
        indexes, rows, total = self._evicted(index)
        w = len(total)
        if len(row) != w:
            raise ValueError(f"a row of {len(row)} numbers in a window of {w}")
        total = tuple(map(add, total, row))
        if indexes and indexes[-1] == index:
            rows = concat(rows[:-w], pack(list(map(add, rows[-w:], row))))
        else:
            indexes, rows = concat(indexes, pack((index,))), concat(rows, pack(row))
        return RollingSums(self.make, self.window, self.buckets, indexes, rows, total)

    def sums(self, t: float) -> Row:
        """The sums over the window that ends at time t."""
        _, _, total = self._evicted(math.floor(t / self.bucket))
        return self.make(total)

    def _evicted(self, index: int) -> tuple[Packed, Packed, tuple[int, ...]]:
        cutoff = index - self.buckets
        indexes, rows, total = self.indexes, self.rows, self.total
        if not indexes or indexes[0] > cutoff:
            return indexes, rows, total
        keep, w = 0, len(total)
        while keep < len(indexes) and indexes[keep] <= cutoff:
            total = tuple(map(sub, total, rows[keep * w : (keep + 1) * w]))
            keep += 1
        return indexes[keep:], rows[keep * w :], total

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as plain tuples: small whole numbers take 2 to 5 bytes there, 4 or 8 in an array."""
        return _restore, (self.make, self.window, self.buckets, plain(self.indexes), plain(self.rows), self.total)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored numbers, 8 per whole number (they are small ints in practice)."""
        return 8 * (len(self.total) + len(self.rows) + len(self.indexes))


def _restore(
    make: Callable[[Iterable[int]], Row], window: float, buckets: int,
    indexes: tuple[int, ...], rows: tuple[int, ...], total: tuple[int, ...],
) -> RollingSums[Row]:  # fmt: skip
    return RollingSums(make, window, buckets, pack(indexes), pack(rows), total)


Bucket = tuple[int, tuple[int, ...]]  # (bucket index, summed row)
