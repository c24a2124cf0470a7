"""Latency: each arm's quantiles and mean over the window, from histograms or request-weighted
percentiles, the challenger's increase over the champion, its connection-pool use, and two
sequential detectors: the challenger's mean latency against the champion's (`increase_*`, a
mixture of alternatives) and its share of the slowest requests (`tail_*`, from histograms).

Both judge request-level data, whose requests are not independent (a GC pause slows a share of
one arm's requests for a moment): a batch adds at most 1/MIN_ALARM_BATCHES of the alarm level (clustered)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Self

from .. import stats
from ..contract import Arm, Histogram, Percentiles, Snapshot
from ..policy.model import Condition
from ..stats.sequential import Boundary, binomial_log_e
from .reading import Reading
from .sequential import (
    MIXTURE,
    Detector,
    Detectors,
    DetectorSpec,
    Evidence,
    Settings,
    advance,
    gaussian_mixture,
    mixture_names,
    relative_settings,
)
from .windows import RollingSums

PREFIX = "latency"
MIN_BATCH_REQUESTS = 100  # requests per arm before a batch's means are compared
TAIL_SHARE = 0.02  # the tail: above the lowest histogram bound that at most 2% of both arms' requests pass
Z_95_ONE_SIDED = 1.6448536269514722  # p95 of a lognormal is exp(mu + 1.645 sigma)


@dataclass(frozen=True, slots=True)
class MeanIncrease:
    """log(challenger mean / champion mean) per batch; each mean's variance from the snapshot's
    own spread (histogram buckets at their midpoints, or a lognormal fitted to p50 and p95)."""

    settings: Settings
    components: Sequence[str] = mixture_names("mean")

    @property
    def signed(self) -> bool:
        return True

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        champion, challenger = _moments(s.champion), _moments(s.challenger)
        if champion is None or challenger is None:
            return None
        return (*champion, *challenger)

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        n_h, sum_h, squares_h, n_c, sum_c, squares_c = pending
        if n_h < MIN_BATCH_REQUESTS or n_c < MIN_BATCH_REQUESTS:
            return None
        mean_h, mean_c = sum_h / n_h, sum_c / n_c
        if mean_h <= 0 or mean_c <= 0:
            return [None] * len(MIXTURE)
        spread_h = max(squares_h / n_h - mean_h * mean_h, 0.0) / (mean_h * mean_h)  # squared coefficients of variation
        spread_c = max(squares_c / n_c - mean_c * mean_c, 0.0) / (mean_c * mean_c)
        variance = max(spread_h / n_h + spread_c / n_c, 1e-12)
        return gaussian_mixture(math.log(mean_c / mean_h), variance, self.settings)

    def shown(self, internal: float) -> float:
        return math.expm1(internal)  # the relative increase challenger / champion - 1

    def describe(self, component: int) -> str:
        return "challenger mean latency vs champion"


def _moments(arm: Arm) -> tuple[float, float, float] | None:
    """(requests, sum of latencies, sum of squared latencies) of one arm's interval, in ms."""
    latency = arm.latency
    if isinstance(latency, Histogram):
        bounds, counts = latency.bounds, latency.counts
        n = total = squares = 0.0
        for index, count in enumerate(counts):
            if not count:
                continue
            middle = bounds[-1] if index == len(bounds) else ((bounds[index - 1] if index else 0.0) + bounds[index]) / 2
            n += count
            total += count * middle
            squares += count * middle * middle
        return (n, total, squares) if n > 0 else None
    if isinstance(latency, Percentiles) and arm.requests > 0:
        sigma = math.log(latency.p95 / latency.p50) / Z_95_ONE_SIDED if latency.p95 > latency.p50 > 0 else 0.0
        n, mean = float(arm.requests), latency.mean
        return n, n * mean, n * mean * mean * math.exp(min(sigma * sigma, 50.0))
    return None


@dataclass(frozen=True, slots=True)
class TailShare:
    """The challenger's rate of tail requests over the champion's, by the conditional binomial test
    (as errors.RateIncrease): per snapshot, the tail is what lies above the lowest histogram bound
    that at most TAIL_SHARE of both arms' requests pass, chosen from the pooled counts alone; given
    both arms' tail counts, the challenger's share is Binomial with a mean set by the arms' requests
    and the rate ratio: an exact e-value per snapshot, multiplied over the batch. A p99 that doubles
    while p50 and p95 hold is a tail rate several times the champion's."""

    settings: Settings
    components: Sequence[str] = ("tail",)

    @property
    def signed(self) -> bool:
        return True

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        tail = tail_counts(s.champion.latency, s.challenger.latency)
        if tail is None:
            return None
        n_h, y, n_c, x = tail
        null, alternative = n_c * math.exp(self.settings.null), n_c * math.exp(self.settings.alternative)
        p_null, p_alt = null / (null + n_h), alternative / (alternative + n_h)
        return (binomial_log_e(x, x + y, p_null, p_alt) if x + y else 0.0, x, y, n_c, n_h)

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        log_e, x, y, n_c, n_h = pending
        if n_c < MIN_BATCH_REQUESTS or n_h < MIN_BATCH_REQUESTS:
            return None
        if x + y <= 0:
            return [None]
        d = math.log((x + 0.5) / n_c) - math.log((y + 0.5) / n_h)
        return [Evidence(log_e, d, 1 / (x + 0.5) + 1 / (y + 0.5))]

    def shown(self, internal: float) -> float:
        return math.expm1(internal)  # the relative increase of the tail rate

    def describe(self, component: int) -> str:
        return "challenger share of tail requests vs champion"


def tail_counts(champion: object, challenger: object) -> tuple[int, int, int, int] | None:
    """(champion requests, champion tail, challenger requests, challenger tail) of one snapshot's
    histograms on the same bounds, the tail chosen from the pooled counts; None without them."""
    if not isinstance(champion, Histogram) or not isinstance(challenger, Histogram):
        return None
    if champion.bounds != challenger.bounds:
        return None
    n_h, n_c = sum(champion.counts), sum(challenger.counts)
    total = n_h + n_c
    if n_h <= 0 or n_c <= 0:
        return None
    above = total
    cut = len(champion.counts) - 1  # the +Inf bucket alone when no bound leaves a small enough tail
    for index in range(len(champion.counts) - 1):
        above -= champion.counts[index] + challenger.counts[index]
        if above <= TAIL_SHARE * total:
            cut = index + 1
            break
    return n_h, sum(champion.counts[cut:]), n_c, sum(challenger.counts[cut:])


def _increase(condition: Condition, boundary: Boundary, batch: float) -> MeanIncrease:
    threshold = condition.thresholds["latency_increase"]
    return MeanIncrease(relative_settings(threshold, boundary, batch, worse_is_lower=False).clustered())


def _tail(condition: Condition, boundary: Boundary, batch: float) -> TailShare:
    threshold = condition.thresholds["latency_tail_increase"]
    return TailShare(relative_settings(threshold, boundary, batch, worse_is_lower=False).clustered())


DETECTORS = (
    DetectorSpec("increase", len(MIXTURE), ("latency_increase",), _increase),
    DetectorSpec("tail", 1, ("latency_tail_increase",), _tail),
)
EMITS = frozenset(
    {fact for spec in DETECTORS for fact in spec.facts()}
    | {
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
    sums: RollingSums

    @classmethod
    def start(cls, window: float, latency: Histogram | Percentiles) -> ArmLatency:
        return cls.empty(window, latency.bounds if isinstance(latency, Histogram) else None)

    @classmethod
    def empty(cls, window: float, bounds: tuple[float, ...] | None) -> ArmLatency:
        """An empty window for a histogram with these upper bounds (None: the percentile form)."""
        if bounds is not None:
            return cls(bounds, RollingSums.empty(_counts, len(bounds) + 1, window))
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
        return ArmLatency(self.bounds, self.sums.add(t, row))

    def summary(self, t: float) -> Summary | None:
        total: tuple[int, ...] = self.sums.sums(t)
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
    detectors: Detectors = ()

    @classmethod
    def start(cls, condition: Condition, detectors: Sequence[tuple[str, Detector]] = ()) -> Self:
        return cls(condition.window_seconds, detectors=tuple(detectors))

    def add(self, s: Snapshot) -> Self:
        return type(self)(
            self.window,
            self._added(self.champion, s.champion, s.timestamp),
            self._added(self.challenger, s.challenger, s.timestamp),
            advance(self.detectors, s),
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
        reading = Reading(mine.requests, facts)
        for name, detector in self.detectors:
            detector.read(name, reading)
        return reading

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
