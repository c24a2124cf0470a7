"""Anomaly: an ensemble of detectors on the challenger's own recent history, kept incrementally.

Detectors, each on every metric of `AnomalyRow` against the rows before the latest: the
largest z-score, metrics outside the IQR fences, an EWMA level shift, and the breakdown of
the usual requests/latency correlation. Each turns its reading r (relative to its cut-off)
into a probability 0.6 * clip(r - 0.5, 0, 1): 0.3 at the cut-off, 0.6 at 1.5x and above.
The ensemble confidence is 1 - prod(1 - p): one detector alone never passes 0.6, two
strong ones reach 0.84, so the default 0.8 threshold needs detectors to agree.

Means, deviations and correlations come from exact sums of quantized values
(`stats.quantize`), so they do not depend on how long the test has run or in which order
rows came and went: a rebuilt history reads exactly as the live one did.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Self

from .. import stats
from ..contract import Snapshot
from ..policy.model import Condition
from .cache import overall_hit_rate
from .latency import arm_summary
from .packed import EMPTY, Packed, concat, floats
from .reading import Reading

PREFIX = "anomaly"
EMITS = frozenset({"confidence", "zscore_max", "iqr_outliers", "level_shift", "correlation_break", "samples"})
MIN_HISTORY = 5
RECENT = 10
MAX_ROWS = 240
DEFAULT_CUTOFFS = {"zscore": 3.0, "iqr_factor": 2.0, "ewma_shift": 3.0, "correlation_drop": 0.5}
EWMA_ALPHA = 0.5
FLAT = 1e-9  # a spread this small relative to the values is rounding, not variation


class AnomalyRow(NamedTuple):
    """The challenger's own per-interval metrics; NaN where the snapshot does not say."""

    error_rate: float
    latency_ms: float  # p95
    accuracy: float
    rps: float
    cache_hit_rate: float  # the overall rate, as cache.hit_rate defines it
    cpu_utilization: float


METRICS = AnomalyRow._fields


@dataclass(frozen=True, slots=True)
class Column:
    """One metric's finite values in the history: sorted (for the IQR) and exact sums (mean, std).

    `ordered` is a packed array of doubles, never changed once a Column holds it: every change
    copies it first (a copy and an insort of 240 doubles cost less than rebuilding a tuple)."""

    ordered: array[float] = field(default_factory=lambda: floats(()))
    total: int = 0
    squares: int = 0

    def with_value(self, value: float) -> Column:
        ordered = self.ordered[:]
        insort(ordered, value)
        q = stats.quantize(value)
        return Column(ordered, self.total + q, self.squares + q * q)

    def without_value(self, value: float) -> Column:
        ordered = self.ordered[:]
        del ordered[bisect_left(ordered, value)]
        q = stats.quantize(value)
        return Column(ordered, self.total - q, self.squares - q * q)


class PairSums(NamedTuple):
    """Exact sums of quantized (rps, latency) pairs, for a Pearson correlation."""

    n: int = 0
    sx: int = 0
    sy: int = 0
    sxx: int = 0
    syy: int = 0
    sxy: int = 0

    def change(self, x: int, y: int, sign: int) -> PairSums:
        return PairSums(
            self.n + sign,
            self.sx + sign * x,
            self.sy + sign * y,
            self.sxx + sign * x * x,
            self.syy + sign * y * y,
            self.sxy + sign * x * y,
        )

    def pearson(self) -> float | None:
        return stats.pearson(self.n, self.sx, self.sy, self.sxx, self.syy, self.sxy, FLAT)


WIDTH = len(METRICS)


@dataclass(frozen=True, slots=True)
class AnomalyHistory:
    """At most `capacity` rows and none older than `max_age` seconds, oldest first; the newest is
    judged against the rest. `max_age` is the policy's longest window, so a history rebuilt from
    that much of the log is the one the live service had.

    Rows are packed: `times` holds each kept row's event time and `values` the rows end to end
    (WIDTH doubles each); the rows' sequence numbers run consecutively up to `sequence` - 1.
    `pairs` holds (sequence number, quantized rps, quantized latency) of the kept rows whose
    two are finite, end to end; the last RECENT are "recent"."""

    capacity: int
    max_age: float = math.inf
    times: array[float] = field(default_factory=lambda: floats(()))
    values: array[float] = field(default_factory=lambda: floats(()))
    columns: tuple[Column, ...] = tuple(Column() for _ in METRICS)  # over every row but the newest
    pairs: Packed = EMPTY
    usual: PairSums = PairSums()  # noqa: RUF009  # an immutable NamedTuple: sharing the default is safe
    recent: PairSums = PairSums()  # noqa: RUF009
    sequence: int = 0

    @classmethod
    def start(cls, condition: Condition) -> Self:
        return cls(max(condition.min_samples + 1, min(MAX_ROWS, math.ceil(condition.window_seconds / 30))))

    def add(self, s: Snapshot) -> Self:
        return self.with_row(anomaly_row(s), s.timestamp)

    def with_row(self, row: AnomalyRow, t: float = 0.0) -> Self:
        times, values, columns = self.times, self.values, self.columns
        pairs, usual, recent = self.pairs, self.usual, self.recent
        if times:
            columns = _enter(columns, values[-WIDTH:])  # the newest row so far joins the history
        times, values = times + floats((t,)), values + floats(row)
        count, leaving = len(times), 0
        while count - leaving > self.capacity or (count - leaving > 1 and times[leaving] <= t - self.max_age):
            columns = _leave(columns, values[leaving * WIDTH : (leaving + 1) * WIDTH])
            leaving += 1
        if leaving:
            oldest = self.sequence - count + leaving  # the sequence number of the last row to leave
            times, values = times[leaving:], values[leaving * WIDTH :]
            while len(pairs) > 3 * RECENT and pairs[0] <= oldest:
                usual = usual.change(pairs[1], pairs[2], -1)
                pairs = pairs[3:]
        if math.isfinite(row.rps) and math.isfinite(row.latency_ms):
            x, y = stats.quantize(row.rps), stats.quantize(row.latency_ms)
            pairs = concat(pairs, (self.sequence, x, y))
            recent = recent.change(x, y, 1)
            if len(pairs) > 3 * RECENT:
                at = len(pairs) - 3 * (RECENT + 1)
                mx, my = pairs[at + 1], pairs[at + 2]
                recent = recent.change(mx, my, -1)
                usual = usual.change(mx, my, 1)
        return type(self)(self.capacity, self.max_age, times, values, columns, pairs, usual, recent, self.sequence + 1)

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        history = len(self.times) - 1
        if history < 1:
            return Reading(0.0)
        levels = (condition.sensitivity_levels or {}).get(condition.sensitivity or "medium", {})
        return Reading(float(history), {**self.detect(levels), "samples": float(history)})

    def detect(self, cutoffs: dict[str, float]) -> dict[str, float]:
        cut = {**DEFAULT_CUTOFFS, **cutoffs}
        values = self.values
        latest = values[-WIDTH:]
        first_recent = max(0, len(self.times) - RECENT)
        zscore_max = level_shift = 0.0
        outliers = 0
        for index, column in enumerate(self.columns):
            value = latest[index]
            count = len(column.ordered)
            if not math.isfinite(value) or count < MIN_HISTORY:
                continue
            mean, std = stats.mean_std(count, column.total, column.squares)
            if std > FLAT * max(1.0, abs(mean)):
                zscore_max = max(zscore_max, abs(value - mean) / std)
                level_shift = max(
                    level_shift, abs(_ewma(values[first_recent * WIDTH + index :: WIDTH], mean) - mean) / std
                )
            q1, q3 = stats.quantile(column.ordered, 0.25), stats.quantile(column.ordered, 0.75)
            spread = q3 - q1
            k = cut["iqr_factor"]
            if spread > 0 and not q1 - k * spread <= value <= q3 + k * spread:
                outliers += 1
        return facts_from(zscore_max, outliers, level_shift, self._correlation_break(), cut)

    def _correlation_break(self) -> float:
        if self.recent.n < RECENT or self.usual.n < MIN_HISTORY:
            return 0.0
        usual, recent = self.usual.pearson(), self.recent.pearson()
        if usual is None or recent is None or abs(usual) < 0.3:
            return 0.0
        return max(0.0, abs(usual) - recent * math.copysign(1.0, usual))

    @property
    def nbytes(self) -> int:
        """Bytes of the stored numbers (8 per float), as the window buffers count theirs."""
        stored = sum(len(column.ordered) for column in self.columns) + len(self.values) + len(self.times)
        return 8 * (stored + len(self.pairs))


def anomaly_row(s: Snapshot) -> AnomalyRow:
    arm = s.challenger
    nan = math.nan
    latency = arm_summary(arm)
    hit_rate = overall_hit_rate(arm.cache) if arm.cache is not None else None
    return AnomalyRow(
        error_rate=sum(arm.errors.values()) / arm.requests if arm.errors is not None and arm.requests else nan,
        latency_ms=latency.p95 if latency is not None else nan,
        accuracy=arm.correct / arm.labeled if arm.labeled and arm.correct is not None else nan,
        rps=arm.requests / s.interval_seconds,
        cache_hit_rate=hit_rate if hit_rate is not None else nan,
        cpu_utilization=arm.cpu_utilization if arm.cpu_utilization is not None else nan,
    )


def facts_from(
    zscore_max: float, outliers: int, level_shift: float, correlation_break: float, cut: dict[str, float]
) -> dict[str, float]:
    probabilities = [
        _strength(zscore_max / cut["zscore"]),
        _strength(outliers / 2 + 0.5) if outliers else 0.0,
        _strength(level_shift / cut["ewma_shift"]),
        _strength(correlation_break / cut["correlation_drop"]),
    ]
    return {
        "confidence": 1.0 - math.prod(1.0 - p for p in probabilities),
        "zscore_max": zscore_max,
        "iqr_outliers": float(outliers),
        "level_shift": level_shift,
        "correlation_break": correlation_break,
    }


def _strength(ratio: float) -> float:
    return 0.6 * min(1.0, max(0.0, ratio - 0.5))


def _enter(columns: tuple[Column, ...], row: Sequence[float]) -> tuple[Column, ...]:
    return tuple(c.with_value(v) if math.isfinite(v) else c for c, v in zip(columns, row, strict=True))


def _leave(columns: tuple[Column, ...], row: Sequence[float]) -> tuple[Column, ...]:
    return tuple(c.without_value(v) if math.isfinite(v) else c for c, v in zip(columns, row, strict=True))


def _ewma(column: Sequence[float], fallback: float) -> float:
    """The EWMA level of one metric over the recent rows, oldest first (a non-finite first starts at `fallback`)."""
    first = column[0]
    level = first if math.isfinite(first) else fallback
    for value in column[1:]:
        if math.isfinite(value):
            level = EWMA_ALPHA * value + (1 - EWMA_ALPHA) * level
    return level
