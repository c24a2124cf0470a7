"""The anomaly ensemble kept incrementally: the same facts as `anomaly.detect` on the same rows,
at a cost per snapshot that does not grow with the history.

Per metric column it keeps running sums (mean, standard deviation) and a sorted list
(IQR quartiles) of the history, i.e. every row before the latest; for the
requests/latency correlation it keeps running sums of the usual pairs and the recent
ones. Sums are rebuilt from the stored values every `capacity` rows so rounding cannot
drift.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

from .anomaly import DEFAULT_CUTOFFS, EWMA_ALPHA, FLAT, LATENCY, MIN_HISTORY, RECENT, RPS, facts_from
from .stats import quantile

Row = list[float]


class _PairSums:
    """Running sums of (x, y) pairs for a Pearson correlation."""

    __slots__ = ("n", "sx", "sxx", "sxy", "sy", "syy")

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = 0.0

    def change(self, x: float, y: float, sign: int) -> None:
        self.n += sign
        self.sx += sign * x
        self.sy += sign * y
        self.sxx += sign * x * x
        self.syy += sign * y * y
        self.sxy += sign * x * y

    def pearson(self) -> float | None:
        if self.n < 3:
            return None
        vx = self.sxx - self.sx * self.sx / self.n
        vy = self.syy - self.sy * self.sy / self.n
        if vx <= FLAT * max(1.0, self.sxx) or vy <= FLAT * max(1.0, self.syy):
            return None
        return max(-1.0, min(1.0, (self.sxy - self.sx * self.sy / self.n) / math.sqrt(vx * vy)))


class AnomalyTracker:
    """Rows oldest first, at most `capacity` of them; the newest is judged against the rest."""

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        self.width = width
        self.rows: deque[tuple[int, Row]] = deque()
        self.latest_rows: deque[Row] = deque(maxlen=RECENT)  # what the EWMA reads
        self.sorted: list[list[float]] = [[] for _ in range(width)]
        self.sums = [0.0] * width
        self.squares = [0.0] * width
        self.usual: deque[tuple[int, float, float]] = deque()
        self.recent: deque[tuple[int, float, float]] = deque()
        self.usual_sums = _PairSums()
        self.recent_sums = _PairSums()
        self.sequence = 0

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: Row) -> None:
        if self.rows:
            self._enter_history(self.rows[-1][1])
        self.rows.append((self.sequence, row))
        self.latest_rows.append(row)
        if len(self.rows) > self.capacity:
            oldest, values = self.rows.popleft()
            self._leave_history(values)
            while self.usual and self.usual[0][0] <= oldest:
                _, x, y = self.usual.popleft()
                self.usual_sums.change(x, y, -1)
        if math.isfinite(row[RPS]) and math.isfinite(row[LATENCY]):
            self.recent.append((self.sequence, row[RPS], row[LATENCY]))
            self.recent_sums.change(row[RPS], row[LATENCY], 1)
            if len(self.recent) > RECENT:
                moved = self.recent.popleft()
                self.recent_sums.change(moved[1], moved[2], -1)
                self.usual.append(moved)
                self.usual_sums.change(moved[1], moved[2], 1)
        self.sequence += 1
        if self.sequence % self.capacity == 0:
            self._rebuild()

    def _enter_history(self, row: Row) -> None:
        for column, value in enumerate(row):
            if math.isfinite(value):
                insort(self.sorted[column], value)
                self.sums[column] += value
                self.squares[column] += value * value

    def _leave_history(self, row: Row) -> None:
        for column, value in enumerate(row):
            if math.isfinite(value):
                values = self.sorted[column]
                del values[bisect_left(values, value)]
                self.sums[column] -= value
                self.squares[column] -= value * value

    def _rebuild(self) -> None:
        self.sums = [math.fsum(values) for values in self.sorted]
        self.squares = [math.fsum(v * v for v in values) for values in self.sorted]

    def detect(self, cutoffs: dict[str, float]) -> dict[str, float]:
        cut = {**DEFAULT_CUTOFFS, **cutoffs}
        latest = self.rows[-1][1]
        zscore_max = level_shift = 0.0
        outliers = 0
        recent_rows = list(self.latest_rows)[-len(self.rows) :]  # never older than the rows kept
        for column in range(self.width):
            value = latest[column]
            values = self.sorted[column]
            count = len(values)
            if not math.isfinite(value) or count < MIN_HISTORY:
                continue
            mean = self.sums[column] / count
            variance = max(0.0, (self.squares[column] - count * mean * mean) / (count - 1))
            std = math.sqrt(variance)
            if std > FLAT * max(1.0, abs(mean)):
                zscore_max = max(zscore_max, abs(value - mean) / std)
                level_shift = max(level_shift, abs(_ewma(recent_rows, column, mean) - mean) / std)
            q1, q3 = quantile(values, 0.25), quantile(values, 0.75)
            spread = q3 - q1
            k = cut["iqr_factor"]
            if spread > 0 and not q1 - k * spread <= value <= q3 + k * spread:
                outliers += 1
        return facts_from(zscore_max, outliers, level_shift, self._correlation_break(), cut)

    def _correlation_break(self) -> float:
        if len(self.recent) < RECENT or len(self.usual) < MIN_HISTORY:
            return 0.0
        usual, recent = self.usual_sums.pearson(), self.recent_sums.pearson()
        if usual is None or recent is None or abs(usual) < 0.3:
            return 0.0
        return max(0.0, abs(usual) - recent * math.copysign(1.0, usual))

    @property
    def nbytes(self) -> int:
        """Bytes of the stored numbers (8 per float), as the window buffers count theirs."""
        stored = sum(len(values) for values in self.sorted) + len(self.rows) * self.width
        return 8 * (stored + 3 * len(self.usual) + 3 * len(self.recent))


def _ewma(rows: list[Row], column: int, fallback: float) -> float:
    first = rows[0][column]
    level = first if math.isfinite(first) else fallback
    for row in rows[1:]:
        value = row[column]
        if math.isfinite(value):
            level = EWMA_ALPHA * value + (1 - EWMA_ALPHA) * level
    return level
