"""Latency: each arm's quantiles and mean over the window, from histograms or request-weighted
percentiles, the challenger's increase over the champion, and its connection-pool use."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Self

from .. import stats
from ..contract import Arm, Histogram, Percentiles, Snapshot
from ..policy.model import Condition
from .reading import Reading
from .windows import RollingSums

PREFIX = "latency"
EMITS = frozenset(
    {
        "mean_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "champion_mean_ms",
        "champion_p95_ms",
        "mean_increase",
        "p95_increase",
        "pool_utilization",
        "samples",
    }
)
NS_PER_MS = 1_000_000  # percentiles are summed as whole nanoseconds x requests


class PercentileSums(NamedTuple):
    requests: int
    p50_ns: int
    p95_ns: int
    p99_ns: int
    mean_ns: int


class Summary(NamedTuple):
    requests: float
    p50: float
    p95: float
    p99: float
    mean: float


@dataclass(frozen=True, slots=True)
class ArmLatency:
    """One arm's latency window; `bounds` is None for the percentile form."""

    bounds: tuple[float, ...] | None
    sums: RollingSums[tuple[int, ...]] | RollingSums[PercentileSums]

    @classmethod
    def start(cls, window: float, latency: Histogram | Percentiles) -> ArmLatency:
        if isinstance(latency, Histogram):
            return cls(latency.bounds, RollingSums.empty(_counts, len(latency.counts), window))
        return cls(None, RollingSums.empty(PercentileSums._make, len(PercentileSums._fields), window))

    def fits(self, latency: Histogram | Percentiles) -> bool:
        return (latency.bounds if isinstance(latency, Histogram) else None) == self.bounds

    def add(self, t: float, latency: Histogram | Percentiles, requests: int) -> ArmLatency:
        if isinstance(latency, Histogram):
            row: tuple[int, ...] = latency.counts
        else:
            row = PercentileSums(
                requests,
                requests * _ns(latency.p50),
                requests * _ns(latency.p95),
                requests * _ns(latency.p99),
                requests * _ns(latency.mean),
            )
        return ArmLatency(self.bounds, self.sums.add(t, row))  # type: ignore[arg-type]

    def summary(self, t: float) -> Summary | None:
        total = self.sums.sums(t)
        if self.bounds is not None:
            return histogram_summary(self.bounds, total)
        sums = PercentileSums._make(total)
        n = sums.requests
        if n <= 0:
            return None
        per_request = n * NS_PER_MS
        return Summary(n, sums.p50_ns / per_request, sums.p95_ns / per_request, sums.p99_ns / per_request,
                       sums.mean_ns / per_request)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LatencyWindows:
    window: float
    champion: ArmLatency | None = None
    challenger: ArmLatency | None = None

    @classmethod
    def start(cls, condition: Condition) -> Self:
        return cls(condition.window_seconds)

    def add(self, s: Snapshot) -> Self:
        return type(self)(
            self.window,
            self._added(self.champion, s.champion, s.timestamp),
            self._added(self.challenger, s.challenger, s.timestamp),
        )

    def _added(self, current: ArmLatency | None, arm: Arm, t: float) -> ArmLatency | None:
        if arm.latency is None:
            return current
        if current is None or not current.fits(arm.latency):
            current = ArmLatency.start(self.window, arm.latency)  # a new bucket layout starts afresh
        return current.add(t, arm.latency, arm.requests)

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        mine = self.challenger.summary(s.timestamp) if self.challenger else None
        if mine is None:
            return Reading(0.0)
        facts = {
            "mean_ms": mine.mean,
            "p50_ms": mine.p50,
            "p95_ms": mine.p95,
            "p99_ms": mine.p99,
            "samples": mine.requests,
        }
        theirs = self.champion.summary(s.timestamp) if self.champion else None
        if theirs is not None:
            facts["champion_mean_ms"], facts["champion_p95_ms"] = theirs.mean, theirs.p95
            if theirs.mean > 0:
                facts["mean_increase"] = mine.mean / theirs.mean - 1
            if theirs.p95 > 0:
                facts["p95_increase"] = mine.p95 / theirs.p95 - 1
        limit = condition.thresholds.get("concurrent_request_limit")
        if limit and s.challenger.concurrent_requests is not None:
            facts["pool_utilization"] = s.challenger.concurrent_requests / limit
        return Reading(mine.requests, facts)

    @property
    def nbytes(self) -> int:
        return sum(arm.sums.nbytes for arm in (self.champion, self.challenger) if arm is not None)


def histogram_summary(bounds: tuple[float, ...], counts: tuple[int, ...]) -> Summary | None:
    n = sum(counts)
    if n <= 0:
        return None
    return Summary(
        n,
        stats.histogram_quantile(0.5, bounds, counts) or 0.0,
        stats.histogram_quantile(0.95, bounds, counts) or 0.0,
        stats.histogram_quantile(0.99, bounds, counts) or 0.0,
        stats.histogram_mean(bounds, counts) or 0.0,
    )


def arm_summary(arm: Arm) -> Summary | None:
    """One interval's latency of one arm, whichever form the snapshot used."""
    latency = arm.latency
    if isinstance(latency, Histogram):
        return histogram_summary(latency.bounds, latency.counts)
    if isinstance(latency, Percentiles):
        return Summary(arm.requests, latency.p50, latency.p95, latency.p99, latency.mean)
    return None


def _ns(milliseconds: float) -> int:
    return round(milliseconds * NS_PER_MS)


def _counts(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)
