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
from typing import Any

from .packed import EMPTY, Packed, concat, pack, plain

# A row: a NamedTuple of whole numbers, or a plain tuple of them. Not a type parameter of
# RollingSums: mypyc cannot compile a generic dataclass, and the window is compiled (setup.py).
Row = Any


@dataclass(frozen=True, slots=True)
class RollingSums:
    """Sums of rows of one shape over the last `window` seconds, in `buckets` time buckets.

    The live buckets are packed end to end (engine/facts/packed.py), oldest first: each is its
    bucket index followed by its summed row, so one bucket is `len(total) + 1` numbers."""

    make: Callable[[Iterable[int]], Row]  # builds the row type from its numbers: RowType._make, or tuple
    window: float
    buckets: int
    packed: Packed
    total: tuple[int, ...]

    @classmethod
    def empty(cls, make: Callable[[Iterable[int]], Row], width: int, window: float, buckets: int = 20) -> RollingSums:
        return cls(make, window, buckets, EMPTY, (0,) * width)

    @property
    def bucket(self) -> float:
        return self.window / self.buckets

    @property
    def live(self) -> tuple[Bucket, ...]:
        """The live buckets as (index, summed row), oldest first."""
        stride = len(self.total) + 1
        cells = self.packed
        return tuple((cells[i], tuple(cells[i + 1 : i + stride])) for i in range(0, len(cells), stride))

    def add(self, t: float, row: Row) -> RollingSums:
        index = math.floor(t / self.bucket)
        packed, total = self._evicted(index)
        w = len(total)
        if len(row) != w:
            raise ValueError(f"a row of {len(row)} numbers in a window of {w}")
        total = tuple(map(add, total, row))
        if packed and packed[-w - 1] == index:
            packed = concat(packed[:-w], list(map(add, packed[-w:], row)))
        else:
            packed = concat(packed, (index, *row))
        return RollingSums(self.make, self.window, self.buckets, packed, total)

    def sums(self, t: float) -> Row:
        """The sums over the window that ends at time t."""
        return self.make(self._evicted(math.floor(t / self.bucket))[1])

    def _evicted(self, index: int) -> tuple[Packed, tuple[int, ...]]:
        cutoff = index - self.buckets
        packed, total = self.packed, self.total
        if not packed or packed[0] > cutoff:
            return packed, total
        stride, at = len(total) + 1, 0
        while at < len(packed) and packed[at] <= cutoff:
            total = tuple(map(sub, total, packed[at + 1 : at + stride]))
            at += stride
        return packed[at:], total

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as a plain tuple: small whole numbers take 2 to 5 bytes there, 4 or 8 in an array."""
        return _restore, (self.make, self.window, self.buckets, plain(self.packed), self.total)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored numbers, 8 per whole number (they are small ints in practice)."""
        return 8 * (len(self.total) + len(self.packed))


def _restore(
    make: Callable[[Iterable[int]], Row], window: float, buckets: int, packed: tuple[int, ...], total: tuple[int, ...]
) -> RollingSums:
    return RollingSums(make, window, buckets, pack(packed), total)


Bucket = tuple[int, tuple[int, ...]]  # (bucket index, summed row)
