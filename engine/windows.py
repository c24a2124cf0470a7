"""Bounded event-time windows: memory depends on the window, never on how long a test runs."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


class RollingSums:
    """Sums of fixed-width vectors over the last `window` seconds, kept in time buckets.

    A value added at time t lands in bucket floor(t / bucket); at time t the window holds
    the buckets after floor((t - window) / bucket). The total is kept incrementally, so
    reading it costs nothing; evicting touches only the buckets that leave.
    """

    __slots__ = ("_buckets", "_data", "_index", "_oldest", "_total", "bucket", "width", "window")

    def __init__(self, window: float, width: int, buckets: int = 30) -> None:
        self.window = window
        self.bucket = window / buckets
        self._buckets = buckets
        self.width = width
        slots = buckets + 1
        self._data: Vector = np.zeros((slots, width))
        self._index = np.full(slots, -1, dtype=np.int64)
        self._total: Vector = np.zeros(width)
        self._oldest: int | None = None  # oldest live bucket index

    def add(self, t: float, values: Vector | list[float]) -> None:
        index = math.floor(t / self.bucket)
        self._evict(index)
        slot = index % len(self._index)
        if self._index[slot] != index:
            self._data[slot] = 0.0
            self._index[slot] = index
        self._data[slot] += values
        self._total += values
        if self._oldest is None or index < self._oldest:
            self._oldest = index

    def total(self, t: float) -> Vector:
        self._evict(math.floor(t / self.bucket))
        return self._total

    def _evict(self, index: int) -> None:
        cutoff = index - self._buckets
        if self._oldest is None or self._oldest > cutoff:
            return
        stale = (self._index >= 0) & (self._index <= cutoff)
        self._total -= self._data[stale].sum(axis=0)
        self._data[stale] = 0.0
        self._index[stale] = -1
        live = self._index[self._index >= 0]
        if live.size:
            self._oldest = int(live.min())
        else:
            self._oldest = None
            self._total[:] = 0.0  # no rounding drift survives an empty window

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes + self._index.nbytes + self._total.nbytes)


class History:
    """The last `capacity` vectors, oldest first, for detectors that need the series itself."""

    __slots__ = ("_count", "_data", "_next")

    def __init__(self, capacity: int, width: int) -> None:
        self._data: Vector = np.zeros((capacity, width))
        self._next = 0
        self._count = 0

    def append(self, values: list[float]) -> None:
        self._data[self._next] = values
        self._next = (self._next + 1) % len(self._data)
        self._count = min(self._count + 1, len(self._data))

    def series(self) -> Vector:
        """Rows oldest to newest."""
        if self._count < len(self._data):
            return self._data[: self._count]
        return np.roll(self._data, -self._next, axis=0)

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)
