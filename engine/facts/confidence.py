"""Confidence drift: the challenger's recent confidence histogram against the champion's 24 h
baseline (KS), mass in the extreme bins, calibration against accuracy, duplicate entities, and
the sequential detector of a shift between the arms' confidence distributions (`drift_*`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import mul
from typing import NamedTuple, Self

from .. import stats
from ..contract import CONFIDENCE_BINS, Snapshot
from ..policy.model import Condition
from ..stats.sequential import Boundary, gaussian_log_e
from .reading import Reading
from .sequential import Detector, Detectors, DetectorSpec, Evidence, Settings, advance
from .windows import RollingSums

PREFIX = "confidence"
MIN_BATCH_SCORES = 30  # confidence scores per arm before a batch's distributions are compared
CUTS = tuple((i + 1) / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS - 1))  # bin edges inside (0, 1)


@dataclass(frozen=True, slots=True)
class DistributionShift:
    """The binned KS distance as a union of one-sided comparisons: at each inner bin edge, the
    challenger's cumulative share minus the champion's, in the same batch, both directions.
    KS >= the threshold exactly when some component's gap is; each is judged by a normal
    approximation with the pooled binomial variance."""

    settings: Settings
    components: Sequence[str] = tuple(f"{sign}{cut:g}" for cut in CUTS for sign in "+-")

    @property
    def signed(self) -> bool:
        return True

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        champion, challenger = s.champion.confidence_histogram, s.challenger.confidence_histogram
        if champion is None or challenger is None:
            return None
        return (*champion, *challenger)

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        champion, challenger = pending[:CONFIDENCE_BINS], pending[CONFIDENCE_BINS:]
        n_h, n_c = sum(champion), sum(challenger)
        if n_h < MIN_BATCH_SCORES or n_c < MIN_BATCH_SCORES:
            return None
        null, alternative = self.settings.null, self.settings.alternative
        out: list[Evidence | None] = []
        below_h = below_c = 0.0
        for k in range(CONFIDENCE_BINS - 1):
            below_h += champion[k]
            below_c += challenger[k]
            pooled = (below_h + below_c + 1.0) / (n_h + n_c + 2.0)
            variance = pooled * (1 - pooled) * (1 / n_h + 1 / n_c)
            gap = below_c / n_c - below_h / n_h
            for d in (gap, -gap):
                out.append(Evidence(gaussian_log_e(d, variance, null, alternative), d, variance))
        return out

    def shown(self, internal: float) -> float:
        return internal

    def describe(self, component: int) -> str:
        cut, more = CUTS[component // 2], component % 2 == 0
        return f"challenger share of confidences below {cut:g} {'above' if more else 'below'} the champion's by"


def _shift(condition: Condition, boundary: Boundary, batch: float) -> DistributionShift:
    threshold = condition.thresholds["confidence_drift_threshold"]
    return DistributionShift(Settings(threshold / 2, threshold, boundary, batch).clustered())


DETECTORS = (DetectorSpec("drift", 2 * len(CUTS), ("confidence_drift_threshold",), _shift),)
EMITS = frozenset(
    {fact for spec in DETECTORS for fact in spec.facts()}
    | {
        "ks_statistic",
        "ks_p_value",
        "extreme_mass",
        "calibration_gap",
        "duplicate_entity_rate",
        "duplicate_increase",
        "samples",
    }
)
BASELINE_BUCKETS = 288  # 5-minute buckets over a 24 h baseline
DEFAULT_BASELINE = 86_400.0
RATE_GRID = 10**9  # duplicate rates are summed as whole billionths x requests
_MIDPOINTS = tuple((i + 0.5) / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS))


class Duplicates(NamedTuple):
    challenger_requests: int
    challenger_duplicates: int  # requests x rate, in billionths
    champion_requests: int
    champion_duplicates: int


@dataclass(frozen=True, slots=True)
class ConfidenceWindows:
    challenger_bins: RollingSums
    champion_bins: RollingSums
    baseline: RollingSums  # the champion's, over the long baseline window
    duplicates: RollingSums
    detectors: Detectors = ()

    @classmethod
    def start(cls, condition: Condition, detectors: Sequence[tuple[str, Detector]] = ()) -> Self:
        window = condition.window_seconds
        baseline = condition.baseline_window_seconds or DEFAULT_BASELINE
        return cls(
            RollingSums.empty(_bins, CONFIDENCE_BINS, window),
            RollingSums.empty(_bins, CONFIDENCE_BINS, window),
            RollingSums.empty(_bins, CONFIDENCE_BINS, baseline, BASELINE_BUCKETS),
            RollingSums.empty(Duplicates._make, len(Duplicates._fields), window),
            tuple(detectors),
        )

    def add(self, s: Snapshot) -> Self:
        t, champion, challenger = s.timestamp, s.champion, s.challenger
        mine, theirs, baseline, duplicates = self.challenger_bins, self.champion_bins, self.baseline, self.duplicates
        if challenger.confidence_histogram is not None:
            mine = mine.add(t, challenger.confidence_histogram)
        if champion.confidence_histogram is not None:
            theirs = theirs.add(t, champion.confidence_histogram)
            baseline = baseline.add(t, champion.confidence_histogram)
        if challenger.duplicate_entity_rate is not None or champion.duplicate_entity_rate is not None:
            duplicates = duplicates.add(
                t,
                Duplicates(
                    *_duplicates(challenger.requests, challenger.duplicate_entity_rate),
                    *_duplicates(champion.requests, champion.duplicate_entity_rate),
                ),
            )
        return type(self)(mine, theirs, baseline, duplicates, advance(self.detectors, s))

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        t = s.timestamp
        recent: tuple[int, ...] = self.challenger_bins.sums(t)
        baseline: tuple[int, ...] = self.baseline.sums(t)
        n, m = sum(recent), sum(baseline)
        facts: dict[str, float] = {"samples": n}
        if n > 0:
            k = max(1, int(condition.thresholds.get("extreme_bins", 1)))
            facts["extreme_mass"] = max(sum(recent[:k]), sum(recent[-k:])) / n
        if n > 0 and m > 0:
            result = stats.ks_binned(recent, baseline)
            if result is not None:
                facts["ks_statistic"], facts["ks_p_value"] = result
        dup: Duplicates = self.duplicates.sums(t)
        if dup.challenger_requests > 0:
            facts["duplicate_entity_rate"] = dup.challenger_duplicates / dup.challenger_requests / RATE_GRID
            if dup.champion_requests > 0:
                champion_rate = dup.champion_duplicates / dup.champion_requests / RATE_GRID
                facts["duplicate_increase"] = facts["duplicate_entity_rate"] - champion_rate
        reading = Reading(min(n, m), facts)
        for name, detector in self.detectors:
            detector.read(name, reading)
        return reading

    def calibration_gap(self, t: float, accuracy: Mapping[str, float]) -> float | None:
        """Challenger |mean confidence - accuracy| minus the champion's, from accuracy's facts."""
        mine: tuple[int, ...] = self.challenger_bins.sums(t)
        theirs: tuple[int, ...] = self.champion_bins.sums(t)
        if sum(mine) <= 0 or sum(theirs) <= 0 or "champion" not in accuracy or "challenger" not in accuracy:
            return None
        return abs(_mean_confidence(mine) - accuracy["challenger"]) - abs(
            _mean_confidence(theirs) - accuracy["champion"]
        )

    @property
    def nbytes(self) -> int:
        windows = (self.challenger_bins, self.champion_bins, self.baseline, self.duplicates)
        return sum(w.nbytes for w in windows)


def _duplicates(requests: int, rate: float | None) -> tuple[int, int]:
    if rate is None:
        return 0, 0
    return requests, requests * round(rate * RATE_GRID)


def _mean_confidence(counts: tuple[int, ...]) -> float:
    return float(sum(map(mul, counts, _MIDPOINTS))) / sum(counts)


def _bins(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)
