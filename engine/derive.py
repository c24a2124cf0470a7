"""Per-test metric windows and the facts derived from them, condition by condition.

Each condition keeps only what its facts need, in bounded event-time windows. A condition
whose window holds fewer samples than its minimum contributes no facts at all: its
indicators cannot fire and its status is `inconclusive`, never silently `ok`.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from math import isfinite

from . import stats
from .anomaly_tracker import AnomalyTracker
from .policy.model import Condition, Policy
from .snapshot import CACHE_TIERS, CONFIDENCE_BINS, ERROR_CATEGORIES, Arm, Histogram, Percentiles, Snapshot
from .windows import RollingSums

BASELINE_BUCKETS = 288  # 5-minute buckets over a 24 h baseline
RISE_TOLERANCE = 0.1  # an error window "rose" when its rate beats the previous one by 10%
FACT_PREFIX = {
    "accuracy": "accuracy",
    "latency": "latency",
    "confidence_drift": "confidence",
    "error_rate": "errors",
    "cache_performance": "cache",
    "throughput": "throughput",
    "anomaly": "anomaly",
}
ANOMALY_METRICS = ("error_rate", "latency_ms", "accuracy", "rps", "cache_hit_rate", "cpu_utilization")
_BIN_MIDPOINTS = [(i + 0.5) / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS)]


@dataclass
class Derived:
    """Facts for the rule engine, and each condition's sample count in its window."""

    facts: dict[str, float] = field(default_factory=dict)
    samples: dict[str, float] = field(default_factory=dict)
    conclusive: dict[str, bool] = field(default_factory=dict)


class _LatencyWindow:
    """One arm's latency over the window, as histogram counts or request-weighted percentiles."""

    __slots__ = ("bounds", "sums")

    def __init__(self, window: float, latency: Histogram | Percentiles) -> None:
        self.bounds = latency.bounds if isinstance(latency, Histogram) else None
        width = len(self.bounds) + 1 if self.bounds is not None else 5
        self.sums = RollingSums(window, width)

    def fits(self, latency: Histogram | Percentiles) -> bool:
        return (latency.bounds if isinstance(latency, Histogram) else None) == self.bounds

    def add(self, t: float, latency: Histogram | Percentiles, requests: int) -> None:
        if isinstance(latency, Histogram):
            self.sums.add(t, list(latency.counts))
        else:
            self.sums.add(
                t,
                [
                    requests,
                    requests * latency.p50,
                    requests * latency.p95,
                    requests * latency.p99,
                    requests * latency.mean,
                ],
            )

    def summary(self, t: float) -> dict[str, float] | None:
        total = self.sums.totals(t)
        if self.bounds is not None:
            counts = total
            n = sum(counts)
            if n <= 0:
                return None
            out = {"n": n, "mean": stats.histogram_mean(self.bounds, counts) or 0.0}
            for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                out[key] = stats.histogram_quantile(q, self.bounds, counts) or 0.0
            return out
        n, p50, p95, p99, mean = total
        if n <= 0:
            return None
        return {"n": n, "p50": p50 / n, "p95": p95 / n, "p99": p99 / n, "mean": mean / n}

    @property
    def nbytes(self) -> int:
        return self.sums.nbytes


class TestMetrics:
    """Everything one test remembers about its metrics; bounded whatever the test's length."""

    def __init__(self, policy: Policy) -> None:
        c = {condition.name: condition for condition in policy.conditions}
        self.conditions = c
        self.accuracy = RollingSums(c["accuracy"].window_seconds, 4)
        self.latency_window = c["latency"].window_seconds
        self.latency: dict[str, _LatencyWindow] = {}
        drift = c["confidence_drift"]
        self.confidence = RollingSums(drift.window_seconds, 2 * CONFIDENCE_BINS + 4)
        self.baseline = RollingSums(drift.baseline_window_seconds or 86400.0, CONFIDENCE_BINS, BASELINE_BUCKETS)
        self.errors = RollingSums(c["error_rate"].window_seconds, 14)
        self.cache = RollingSums(c["cache_performance"].window_seconds, 2 * len(CACHE_TIERS) + 6)
        self.cache_entries: int | None = None
        self.throughput = RollingSums(c["throughput"].window_seconds, 6)
        anomaly = c["anomaly"]
        self.history = AnomalyTracker(
            max(anomaly.min_samples + 1, min(240, math.ceil(anomaly.window_seconds / 30))), len(ANOMALY_METRICS)
        )
        self.error_window = c["error_rate"].window_seconds
        self.tumbling: tuple[int, float, float] | None = None  # window index, requests, errors
        self.last_window_rate: float | None = None
        self.rising_windows = 0

    # --- updating -------------------------------------------------------------------------
    def add(self, s: Snapshot) -> None:
        t, champion, challenger = s.timestamp, s.champion, s.challenger
        if champion.labeled is not None or challenger.labeled is not None:
            self.accuracy.add(
                t, [champion.labeled or 0, champion.correct or 0, challenger.labeled or 0, challenger.correct or 0]
            )
        for name, arm in (("champion", champion), ("challenger", challenger)):
            if arm.latency is not None:
                window = self.latency.get(name)
                if window is None or not window.fits(arm.latency):
                    window = self.latency[name] = _LatencyWindow(self.latency_window, arm.latency)
                window.add(t, arm.latency, arm.requests)
        self._add_confidence(t, champion, challenger)
        if champion.errors is not None or challenger.errors is not None:
            self.errors.add(t, _error_row(champion) + _error_row(challenger))
        if challenger.errors is not None:
            self._count_rising(t, challenger.requests, sum(challenger.errors.values()))
        if challenger.cache is not None:
            self._add_cache(t, challenger, s.interval_seconds)
        share = s.rollout_percent / 100 if s.rollout_percent is not None else None
        # each snapshot's requests per unit of its own traffic share: a ramp is not a drop
        shared = (champion.requests / (1 - share), challenger.requests / share) if share and 0 < share < 1 else (0, 0)
        self.throughput.add(t, [champion.requests, challenger.requests, s.interval_seconds, 1, *shared])
        self.history.add(_anomaly_row(s))

    def _add_confidence(self, t: float, champion: Arm, challenger: Arm) -> None:
        if champion.confidence_histogram is not None:
            self.baseline.add(t, list(champion.confidence_histogram))
        row = [0.0] * (2 * CONFIDENCE_BINS + 4)
        if challenger.confidence_histogram is not None:
            row[:CONFIDENCE_BINS] = challenger.confidence_histogram
        if champion.confidence_histogram is not None:
            row[CONFIDENCE_BINS : 2 * CONFIDENCE_BINS] = champion.confidence_histogram
        for offset, arm in ((2 * CONFIDENCE_BINS, challenger), (2 * CONFIDENCE_BINS + 2, champion)):
            if arm.duplicate_entity_rate is not None:
                row[offset] = arm.requests
                row[offset + 1] = arm.requests * arm.duplicate_entity_rate
        self.confidence.add(t, row)

    def _count_rising(self, t: float, requests: int, errors: int) -> None:
        """Consecutive back-to-back error windows whose rate rose by more than RISE_TOLERANCE."""
        index = math.floor(t / self.error_window)
        if self.tumbling is not None and self.tumbling[0] != index:
            _, done_requests, done_errors = self.tumbling
            if done_requests > 0:
                rate = done_errors / done_requests
                previous = self.last_window_rate
                rose = previous is not None and rate > previous * (1 + RISE_TOLERANCE) and rate > 0
                adjacent = self.tumbling[0] == index - 1
                self.rising_windows = self.rising_windows + 1 if rose and adjacent else 0
                self.last_window_rate = rate
            self.tumbling = None
        _, total_requests, total_errors = self.tumbling or (index, 0.0, 0.0)
        self.tumbling = (index, total_requests + requests, total_errors + errors)

    def _add_cache(self, t: float, arm: Arm, interval: float) -> None:
        cache = arm.cache
        assert cache is not None
        row: list[float] = []
        for tier in CACHE_TIERS:
            counts = cache.tiers.get(tier)
            row += [counts.hits, counts.misses] if counts else [0, 0]
        first = next((cache.tiers[tier] for tier in CACHE_TIERS if tier in cache.tiers), None)
        lookups = first.hits + first.misses if first else 0
        last = next((cache.tiers[tier] for tier in reversed(CACHE_TIERS) if tier in cache.tiers), None)
        final_misses = last.misses if last else 0
        timed = lookups if cache.response_time_ms is not None else 0
        reported = interval if cache.evictions is not None else 0  # seconds the eviction counts cover
        row += [lookups, final_misses, cache.evictions or 0, reported, timed, timed * (cache.response_time_ms or 0)]
        self.cache.add(t, row)
        if cache.entries is not None:
            self.cache_entries = cache.entries

    # --- deriving -------------------------------------------------------------------------
    def derive(self, s: Snapshot) -> Derived:
        out = Derived()
        t = s.timestamp
        for name, derive in (
            ("accuracy", self._accuracy),
            ("latency", self._latency),
            ("confidence_drift", self._confidence),
            ("error_rate", self._errors),
            ("cache_performance", self._cache),
            ("throughput", self._throughput),
            ("anomaly", self._anomaly),
        ):
            condition = self.conditions[name]
            samples, facts = derive(t, s, condition)
            out.samples[name] = samples
            conclusive = samples >= condition.min_samples and samples > 0
            out.conclusive[name] = conclusive
            if conclusive:
                prefix = FACT_PREFIX[name] + "."
                out.facts.update({prefix + key: value for key, value in facts.items() if isfinite(value)})
        if out.conclusive["confidence_drift"] and "accuracy.challenger" in out.facts:
            gap = self._calibration_gap(t, out.facts)
            if gap is not None:
                out.facts["confidence.calibration_gap"] = gap
        return out

    def _accuracy(self, t: float, s: Snapshot, c: Condition) -> tuple[float, dict[str, float]]:
        champion_n, champion_ok, challenger_n, challenger_ok = self.accuracy.totals(t)
        facts: dict[str, float] = {"samples": challenger_n}
        if challenger_n > 0:
            accuracy = challenger_ok / challenger_n
            low, high = stats.wilson_interval(round(challenger_ok), round(challenger_n))
            facts |= {"challenger": accuracy, "challenger_ci_low": low, "challenger_ci_high": high}
        if champion_n >= c.min_samples and champion_n > 0 and challenger_n > 0:
            baseline = champion_ok / champion_n
            facts["champion"] = baseline
            if baseline > 0:
                facts["relative_drop"] = (baseline - facts["challenger"]) / baseline
            facts["p_value"] = stats.p_value_worse(
                round(champion_ok), round(champion_n), round(challenger_ok), round(challenger_n)
            )
        return challenger_n, facts

    def _latency(self, t: float, s: Snapshot, c: Condition) -> tuple[float, dict[str, float]]:
        challenger = self.latency.get("challenger")
        mine = challenger.summary(t) if challenger else None
        if mine is None:
            return 0.0, {}
        facts = {
            "mean_ms": mine["mean"],
            "p50_ms": mine["p50"],
            "p95_ms": mine["p95"],
            "p99_ms": mine["p99"],
            "samples": mine["n"],
        }
        champion = self.latency.get("champion")
        theirs = champion.summary(t) if champion else None
        if theirs is not None:
            facts["champion_mean_ms"], facts["champion_p95_ms"] = theirs["mean"], theirs["p95"]
            if theirs["mean"] > 0:
                facts["mean_increase"] = mine["mean"] / theirs["mean"] - 1
            if theirs["p95"] > 0:
                facts["p95_increase"] = mine["p95"] / theirs["p95"] - 1
        limit = c.thresholds.get("concurrent_request_limit")
        if limit and s.challenger.concurrent_requests is not None:
            facts["pool_utilization"] = s.challenger.concurrent_requests / limit
        return mine["n"], facts

    def _confidence(self, t: float, s: Snapshot, c: Condition) -> tuple[float, dict[str, float]]:
        row = self.confidence.totals(t)
        recent = row[:CONFIDENCE_BINS]
        baseline = self.baseline.totals(t)
        n, m = sum(recent), sum(baseline)
        facts: dict[str, float] = {"samples": n}
        if n > 0:
            k = max(1, int(c.thresholds.get("extreme_bins", 1)))
            facts["extreme_mass"] = max(sum(recent[:k]), sum(recent[-k:])) / n
        if n > 0 and m > 0:
            result = stats.ks_binned(recent, baseline)
            if result is not None:
                facts["ks_statistic"], facts["ks_p_value"] = result
        dup_n, dup_sum, champion_dup_n, champion_dup_sum = row[2 * CONFIDENCE_BINS :]
        if dup_n > 0:
            facts["duplicate_entity_rate"] = dup_sum / dup_n
            if champion_dup_n > 0:
                facts["duplicate_increase"] = facts["duplicate_entity_rate"] - champion_dup_sum / champion_dup_n
        return min(n, m), facts

    def _calibration_gap(self, t: float, facts: dict[str, float]) -> float | None:
        row = self.confidence.totals(t)
        challenger, champion = row[:CONFIDENCE_BINS], row[CONFIDENCE_BINS : 2 * CONFIDENCE_BINS]
        if sum(challenger) <= 0 or sum(champion) <= 0 or "accuracy.champion" not in facts:
            return None
        mine = abs(_mean_confidence(challenger) - facts["accuracy.challenger"])
        theirs = abs(_mean_confidence(champion) - facts["accuracy.champion"])
        return mine - theirs

    def _errors(self, t: float, s: Snapshot, c: Condition) -> tuple[float, dict[str, float]]:
        row = self.errors.totals(t)
        champion, challenger = row[:7], row[7:]
        requests = challenger[0]
        facts: dict[str, float] = {"samples": requests}
        if requests > 0:
            rate = sum(challenger[1:5]) / requests
            facts["rate"] = rate
            for name, count in zip(ERROR_CATEGORIES, challenger[1:5], strict=True):
                facts[f"{name}_rate"] = count / requests
            facts["rising_windows"] = self.rising_windows
        if challenger[5] > 0:
            facts["retry_failure_rate"] = challenger[6] / challenger[5]
        if champion[0] > 0:
            facts["champion_rate"] = sum(champion[1:5]) / champion[0]
        return requests, facts

    def _cache(self, t: float, s: Snapshot, c: Condition) -> tuple[float, dict[str, float]]:
        row = self.cache.totals(t)
        tiers = row[: 2 * len(CACHE_TIERS)]
        lookups, final_misses, evictions, eviction_seconds, timed, timed_sum = row[2 * len(CACHE_TIERS) :]
        facts: dict[str, float] = {"samples": lookups}
        if lookups > 0:
            facts["hit_rate"] = 1 - final_misses / lookups
        for index, tier in enumerate(CACHE_TIERS):
            hits, misses = tiers[2 * index], tiers[2 * index + 1]
            if hits + misses > 0:
                facts[f"{tier}_hit_rate"] = hits / (hits + misses)
        if eviction_seconds > 0 and self.cache_entries:
            facts["eviction_rate"] = evictions / (eviction_seconds / 60) / self.cache_entries
        if timed > 0:
            facts["response_time_ms"] = timed_sum / timed
        return lookups, facts

    def _throughput(self, t: float, s: Snapshot, c: Condition) -> tuple[float, dict[str, float]]:
        totals = self.throughput.totals(t)
        champion_requests, challenger_requests, seconds, snapshots, champion_shared, challenger_shared = totals
        facts: dict[str, float] = {"samples": snapshots}
        if seconds > 0:
            facts["service_rps"] = (champion_requests + challenger_requests) / seconds
        if champion_shared > 0:
            facts["relative_drop"] = 1 - challenger_shared / champion_shared
        arms = (s.champion, s.challenger)
        depths = [arm.queue_depth for arm in arms if arm.queue_depth is not None]
        if depths:
            facts["queue_depth"] = max(depths)
        concurrency = [arm.concurrent_requests for arm in arms if arm.concurrent_requests is not None]
        if concurrency:
            facts["concurrent_requests"] = sum(concurrency)
        for key in ("cpu_utilization", "memory_utilization"):
            values = [getattr(arm, key) for arm in arms if getattr(arm, key) is not None]
            if values:
                facts[key] = max(values)
        return snapshots, facts

    def _anomaly(self, t: float, s: Snapshot, c: Condition) -> tuple[float, dict[str, float]]:
        history = len(self.history) - 1
        if history < 1:
            return 0.0, {}
        levels = (c.sensitivity_levels or {}).get(c.sensitivity or "medium", {})
        return float(history), self.history.detect(levels)

    # --- accounting -----------------------------------------------------------------------
    def state_bytes(self) -> int:
        """Pickled size of what this test keeps (the policy it points to is shared, not counted)."""
        return len(pickle.dumps({k: v for k, v in vars(self).items() if k != "conditions"}))

    @property
    def nbytes(self) -> int:
        windows = [self.accuracy, self.confidence, self.baseline, self.errors, self.cache, self.throughput]
        return sum(w.nbytes for w in windows) + sum(w.nbytes for w in self.latency.values()) + self.history.nbytes


def _error_row(arm: Arm) -> list[float]:
    if arm.errors is None:
        return [0.0] * 7
    attempted, failed = arm.retries or (0, 0)
    return [arm.requests, *(arm.errors[name] for name in ERROR_CATEGORIES), attempted, failed]


def _anomaly_row(s: Snapshot) -> list[float]:
    """The challenger's own per-interval metrics; NaN where the snapshot does not say."""
    arm = s.challenger
    nan = math.nan
    error_rate = sum(arm.errors.values()) / arm.requests if arm.errors is not None and arm.requests else nan
    latency = nan
    if isinstance(arm.latency, Percentiles):
        latency = arm.latency.p95
    elif isinstance(arm.latency, Histogram):
        latency = stats.histogram_quantile(0.95, arm.latency.bounds, arm.latency.counts) or nan
    accuracy = arm.correct / arm.labeled if arm.labeled and arm.correct is not None else nan
    hit_rate = nan
    if arm.cache is not None and arm.cache.tiers:
        hits = sum(tier.hits for tier in arm.cache.tiers.values())
        total = hits + sum(tier.misses for tier in arm.cache.tiers.values())
        hit_rate = hits / total if total else nan
    cpu = arm.cpu_utilization if arm.cpu_utilization is not None else nan
    return [error_rate, latency, accuracy, arm.requests / s.interval_seconds, hit_rate, cpu]


def _mean_confidence(counts: list[float]) -> float:
    total = sum(counts)
    return sum(c * m for c, m in zip(counts, _BIN_MIDPOINTS, strict=True)) / total
