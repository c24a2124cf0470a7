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

Row = TypeVar("Row", bound=tuple[Any, ...])  # a NamedTuple of whole numbers, or a plain tuple of them
Bucket = tuple[int, tuple[int, ...]]  # (bucket index, summed row)


@dataclass(frozen=True, slots=True)
class RollingSums(Generic[Row]):
    """Sums of rows of one shape over the last `window` seconds, in `buckets` time buckets."""

    make: Callable[[Iterable[int]], Row]  # builds the row type from its numbers: RowType._make, or tuple
    window: float
    buckets: int
    live: tuple[Bucket, ...]  # oldest first, at most `buckets` of them
    total: tuple[int, ...]

    @classmethod
    def empty(
        cls, make: Callable[[Iterable[int]], Row], width: int, window: float, buckets: int = 20
    ) -> RollingSums[Row]:
        return cls(make, window, buckets, (), (0,) * width)

    @property
    def bucket(self) -> float:
        return self.window / self.buckets

    def add(self, t: float, row: Row) -> RollingSums[Row]:
        index = math.floor(t / self.bucket)
        live, total = self._evicted(index)
        if len(row) != len(total):
            raise ValueError(f"a row of {len(row)} numbers in a window of {len(total)}")
        total = tuple(map(add, total, row))
        if live and live[-1][0] == index:
            live = (*live[:-1], (index, tuple(map(add, live[-1][1], row))))
        else:
            live = (*live, (index, tuple(row)))
        return RollingSums(self.make, self.window, self.buckets, live, total)

    def sums(self, t: float) -> Row:
        """The sums over the window that ends at time t."""
        _, total = self._evicted(math.floor(t / self.bucket))
        return self.make(total)

    def _evicted(self, index: int) -> tuple[tuple[Bucket, ...], tuple[int, ...]]:
        cutoff = index - self.buckets
        live, total = self.live, self.total
        if not live or live[0][0] > cutoff:
            return live, total
        keep = 0
        while keep < len(live) and live[keep][0] <= cutoff:
            total = tuple(map(sub, total, live[keep][1]))
            keep += 1
        return live[keep:], total

    @property
    def nbytes(self) -> int:
        """Bytes of the stored numbers, 8 per whole number (they are small ints in practice)."""
        return 8 * (len(self.total) * (len(self.live) + 1) + len(self.live))
