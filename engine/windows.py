"""Bounded event-time windows: memory depends on the window, never on how long a test runs."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


class RollingSums:
    """Sums of fixed-width vectors over the last `window` seconds, kept in time buckets.

    A value added at time t lands in bucket floor(t / bucket); at time t the window holds
    the buckets after floor(t / bucket) - buckets. Live buckets span at most `buckets`
    consecutive indices, so bucket i lives in row i % (buckets + 1) of one preallocated
    array; a deque of the live indices, oldest first, says which rows to evict. The total
    is kept incrementally: reading it costs nothing, evicting touches only what leaves.
    """

    __slots__ = ("_buckets", "_data", "_live", "_total", "bucket", "width", "window")

    def __init__(self, window: float, width: int, buckets: int = 20) -> None:
        self.window = window
        self.bucket = window / buckets
        self._buckets = buckets
        self.width = width
        self._data: Vector = np.zeros((buckets + 1, width))
        self._live: deque[int] = deque()
        self._total: Vector = np.zeros(width)

    def add(self, t: float, values: Vector | list[float]) -> None:
        index = math.floor(t / self.bucket)
        self._evict(index)
        vector = np.asarray(values, dtype=np.float64)
        row = index % (self._buckets + 1)
        if self._live and self._live[-1] == index:
            self._data[row] += vector
        else:
            self._data[row] = vector
            self._live.append(index)
        self._total += vector

    def total(self, t: float) -> Vector:
        """The sums over the window at time t (a copy: later adds do not change it)."""
        self._evict(math.floor(t / self.bucket))
        return self._total.copy()

    def totals(self, t: float) -> list[float]:
        """The same sums as plain floats, the form the fact derivations read."""
        self._evict(math.floor(t / self.bucket))
        return self._total.tolist()  # type: ignore[no-any-return]

    def _evict(self, index: int) -> None:
        cutoff = index - self._buckets
        live = self._live
        while live and live[0] <= cutoff:
            self._total -= self._data[live.popleft() % (self._buckets + 1)]
        if not live:
            self._total[:] = 0.0  # no rounding drift survives an empty window

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes + self._total.nbytes + 8 * (self._buckets + 1))  # live indices at most
