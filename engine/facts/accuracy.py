"""Accuracy: rolling correct/labeled of both arms, the challenger's Wilson interval, the
one-sided test of 'the challenger is less accurate', and three sequential detectors: the
challenger's relative drop against the champion (`drop_*`), its shortfall below the policy's
absolute floor (`floor_*`, an exact binomial e-value: no normal approximation, no least batch),
and the champion's own shortfall below that floor (`champion_floor_*`): the challenger below the
floor while the champion's evidence climbs too, with no drop between them, is a shift both arms
share (the policy's shared_degradation), not the model's.

Labels count whichever snapshot carries them: each arm's labels add to the pending batch on
their own, and a batch is judged once both arms hold enough (docs/statistics.md, "Labels").
Each detector is a mixture of alternatives (MIXTURE): a large drop on few labels is judged
against a large alternative, so its evidence grows with its size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Self

from .. import stats
from ..contract import Snapshot
from ..policy.model import Condition
from ..stats.sequential import Boundary, binomial_log_e
from .reading import Reading
from .sequential import (
    MIXTURE,
    Detector,
    DetectorSpec,
    Evidence,
    Settings,
    advance,
    gaussian_mixture,
    mixture_names,
    relative_settings,
)
from .windows import RollingSums

PREFIX = "accuracy"
MIN_BATCH_LABELS = 30  # labels per arm before a batch is judged: the normal approximation needs some


class Labels(NamedTuple):
    champion_labeled: int
    champion_correct: int
    challenger_labeled: int
    challenger_correct: int


def _smoothed(correct: float, labeled: float) -> float:
    """Accuracy with half a success and half a failure added: never 0 or 1, so logs and variances exist."""
    return (correct + 0.5) / (labeled + 1.0)


@dataclass(frozen=True, slots=True)
class RelativeDrop:
    """log(champion accuracy / challenger accuracy) per batch, normal approximation (delta method).

    Labels of either arm count in whichever snapshot they come: the batch sums each arm's own, and
    is judged once both hold MIN_BATCH_LABELS (it assumes each arm's accuracy is steady over the batch)."""

    settings: Settings
    components: Sequence[str] = mixture_names("drop")

    @property
    def signed(self) -> bool:
        return True

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        champion, challenger = s.champion, s.challenger
        if not champion.labeled and not challenger.labeled:
            return None
        return (champion.labeled or 0, champion.correct or 0, challenger.labeled or 0, challenger.correct or 0)

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        n_h, c_h, n_c, c_c = pending
        if n_h < MIN_BATCH_LABELS or n_c < MIN_BATCH_LABELS:
            return None
        p_h, p_c = _smoothed(c_h, n_h), _smoothed(c_c, n_c)
        d = math.log(p_h / p_c)
        variance = (1 - p_c) / (n_c * p_c) + (1 - p_h) / (n_h * p_h)
        return gaussian_mixture(d, variance, self.settings)

    def shown(self, internal: float) -> float:
        return -math.expm1(-internal)  # the relative drop 1 - challenger / champion

    def describe(self, component: int) -> str:
        return "relative accuracy drop"


@dataclass(frozen=True, slots=True)
class BelowFloor:
    """The challenger's shortfall below the floor, on the scale log(floor / accuracy).

    Its e-value is exact: the binomial likelihood ratio of the batch's correct labels under an
    accuracy below the floor against the floor itself is monotone in the accuracy, so its mean is
    at most 1 for every accuracy at or above the floor, with 3 labels as with 3,000. One component
    per alternative of the mixture (the floor lowered by 1, 2, 4, 8 times the margin, on the log
    scale). The estimate and its interval use the normal approximation, as a person reads them."""

    settings: Settings
    floor: float
    champion: bool = False  # the champion's shortfall instead: a shift both arms share
    components: Sequence[str] = mixture_names("floor")

    @property
    def signed(self) -> bool:  # it reports an accuracy, not a change
        return False

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        arm = s.champion if self.champion else s.challenger
        return (arm.labeled, arm.correct or 0) if arm.labeled else None

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        n, c = pending
        if n < 1:
            return None
        p = _smoothed(c, n)
        d, variance = math.log(self.floor / p), (1 - p) / (n * p)
        floor, alternatives = self.floor, self.settings.alternatives
        return [Evidence(binomial_log_e(c, n, floor, floor * math.exp(-a)), d, variance) for a in alternatives]

    def shown(self, internal: float) -> float:
        return self.floor * math.exp(-internal)  # the arm's accuracy

    def describe(self, component: int) -> str:
        return f"{'champion' if self.champion else 'challenger'} accuracy (floor {self.floor:g})"


def _drop(condition: Condition, boundary: Boundary, batch: float) -> RelativeDrop:
    threshold = condition.thresholds["accuracy_degradation_percentage"]
    return RelativeDrop(relative_settings(threshold, boundary, batch, worse_is_lower=True))


def _floor(condition: Condition, boundary: Boundary, batch: float) -> BelowFloor:
    margin = -math.log1p(-condition.thresholds["accuracy_floor_margin"])
    return BelowFloor(Settings(0.0, margin, boundary, batch), condition.thresholds["accuracy_threshold"])


def _champion_floor(condition: Condition, boundary: Boundary, batch: float) -> BelowFloor:
    return replace(_floor(condition, boundary, batch), champion=True)


FLOOR_KEYS = ("accuracy_threshold", "accuracy_floor_margin")
DETECTORS = (
    DetectorSpec("drop", len(MIXTURE), ("accuracy_degradation_percentage",), _drop),
    DetectorSpec("floor", len(MIXTURE), FLOOR_KEYS, _floor),
    DetectorSpec("champion_floor", len(MIXTURE), FLOOR_KEYS, _champion_floor),
)
EMITS = frozenset(
    {"challenger", "champion", "challenger_ci_low", "challenger_ci_high", "relative_drop", "p_value", "samples"}
    | {"label_lag_seconds", "champion_label_lag_seconds"}
    | {fact for spec in DETECTORS for fact in spec.facts()}
)
MAX_LAG_KEY = "max_label_lag_seconds"  # the condition's threshold: labels older than this make it inconclusive


def covered(current: float | None, t: float, labeled: int | None, until: float | None) -> float | None:
    """Up to when an arm's labels cover its predictions, after a snapshot: the arm's `labels_until`
    when it says so, else the snapshot's own time when it carries labels (they came with it)."""
    if until is not None:
        return until if current is None else max(current, until)
    if labeled:
        return t if current is None else max(current, t)
    return current


Delivery = tuple[int, int]  # an arm's latest labels: how many, how many correct


def _latest(current: Delivery | None, labeled: int | None, correct: int | None) -> Delivery | None:
    return (labeled, correct or 0) if labeled else current


@dataclass(frozen=True, slots=True)
class AccuracyWindow:
    """The last `window` of labels as they came, and at least each arm's latest delivery: with
    labels in bursts minutes apart, the condition keeps judging the latest burst until the next
    comes (its age bounded by max_label_lag_seconds), instead of falling silent between bursts
    while its evidence stands."""

    labels: RollingSums
    detectors: tuple[tuple[str, Detector], ...] = ()
    champion_covered: float | None = None  # up to when each arm's labels cover its predictions
    challenger_covered: float | None = None
    champion_latest: Delivery | None = None
    challenger_latest: Delivery | None = None

    @classmethod
    def start(cls, condition: Condition, detectors: Sequence[tuple[str, Detector]] = ()) -> Self:
        return cls(RollingSums.empty(Labels._make, len(Labels._fields), condition.window_seconds), tuple(detectors))

    def add(self, s: Snapshot) -> Self:
        champion, challenger = s.champion, s.challenger
        t = s.timestamp
        mine = covered(self.challenger_covered, t, challenger.labeled, challenger.labels_until)
        theirs = covered(self.champion_covered, t, champion.labeled, champion.labels_until)
        latest = self.champion_latest, self.challenger_latest
        if champion.labeled is None and challenger.labeled is None:
            if (mine, theirs) == (self.challenger_covered, self.champion_covered):
                return self
            return type(self)(self.labels, self.detectors, theirs, mine, *latest)
        row = Labels(champion.labeled or 0, champion.correct or 0, challenger.labeled or 0, challenger.correct or 0)
        return type(self)(
            self.labels.add(t, row),
            advance(self.detectors, s),
            theirs,
            mine,
            _latest(latest[0], champion.labeled, champion.correct),
            _latest(latest[1], challenger.labeled, challenger.correct),
        )

    def _sums(self, t: float) -> Labels:
        """The window's labels, with each arm's latest delivery added when the window has let it go."""
        n: Labels = self.labels.sums(t)
        champion, challenger = self.champion_latest, self.challenger_latest  # in the window, they count already
        if champion is not None and n.champion_labeled == 0:
            n = n._replace(champion_labeled=champion[0], champion_correct=champion[1])
        if challenger is not None and n.challenger_labeled == 0:
            n = n._replace(challenger_labeled=challenger[0], challenger_correct=challenger[1])
        return n

    def lags(self, t: float) -> dict[str, float]:
        """Seconds each arm's labels lag behind the snapshot at t (an arm never labeled has none)."""
        out: dict[str, float] = {}
        if self.champion_covered is not None:
            out["champion"] = max(0.0, t - self.champion_covered)
        if self.challenger_covered is not None:
            out["challenger"] = max(0.0, t - self.challenger_covered)
        return out

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        reading = self._read(s, condition)
        lags = reading.label_lag = self.lags(s.timestamp)
        if "challenger" in lags:
            reading.facts["label_lag_seconds"] = lags["challenger"]
        if "champion" in lags:
            reading.facts["champion_label_lag_seconds"] = lags["champion"]
        allowed = condition.thresholds.get(MAX_LAG_KEY)
        stale = [(arm, lag) for arm, lag in lags.items() if allowed is not None and lag > allowed]
        if stale and allowed is not None:
            said = ", ".join(
                f"the {arm}'s labels cover predictions only up to {_minutes(lag)} ago" for arm, lag in stale
            )
            reading.inconclusive = f"labels stopped: {said} (the policy allows {_minutes(allowed)})"
        return reading

    def _read(self, s: Snapshot, condition: Condition) -> Reading:
        n = self._sums(s.timestamp)
        facts: dict[str, float] = {"samples": n.challenger_labeled}
        if n.challenger_labeled > 0:
            low, high = stats.wilson_interval(n.challenger_correct, n.challenger_labeled)
            facts["challenger"] = n.challenger_correct / n.challenger_labeled
            facts["challenger_ci_low"], facts["challenger_ci_high"] = low, high
        if n.champion_labeled >= condition.min_samples and n.champion_labeled > 0 and n.challenger_labeled > 0:
            baseline = n.champion_correct / n.champion_labeled
            facts["champion"] = baseline
            if baseline > 0:
                facts["relative_drop"] = (baseline - facts["challenger"]) / baseline
            facts["p_value"] = stats.p_value_worse(
                n.champion_correct, n.champion_labeled, n.challenger_correct, n.challenger_labeled
            )
        reading = Reading(n.challenger_labeled, facts)
        for name, detector in self.detectors:
            detector.read(name, reading)
        return reading

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
