"""Accuracy: rolling correct/labeled of both arms, the challenger's Wilson interval, the
one-sided test of 'the challenger is less accurate', and two sequential detectors: the
challenger's relative drop against the champion (`drop_*`) and its shortfall below the
policy's absolute floor (`floor_*`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Self

from .. import stats
from ..contract import Snapshot
from ..policy.model import Condition
from ..stats.sequential import Boundary, gaussian_log_e
from .reading import Reading
from .sequential import Detector, DetectorSpec, Evidence, Settings, advance, relative_settings
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
    """log(champion accuracy / challenger accuracy) per batch, normal approximation (delta method)."""

    settings: Settings
    components: Sequence[str] = ("drop",)

    @property
    def signed(self) -> bool:
        return True

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        champion, challenger = s.champion, s.challenger
        if not champion.labeled or not challenger.labeled:
            return None
        return (champion.labeled, champion.correct or 0, challenger.labeled, challenger.correct or 0)

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        n_h, c_h, n_c, c_c = pending
        if n_h < MIN_BATCH_LABELS or n_c < MIN_BATCH_LABELS:
            return None
        p_h, p_c = _smoothed(c_h, n_h), _smoothed(c_c, n_c)
        d = math.log(p_h / p_c)
        variance = (1 - p_c) / (n_c * p_c) + (1 - p_h) / (n_h * p_h)
        return [Evidence(gaussian_log_e(d, variance, self.settings.null, self.settings.alternative), d, variance)]

    def shown(self, internal: float) -> float:
        return -math.expm1(-internal)  # the relative drop 1 - challenger / champion

    def describe(self, component: int) -> str:
        return "relative accuracy drop"


@dataclass(frozen=True, slots=True)
class BelowFloor:
    """log(floor / challenger accuracy) per batch: the challenger's shortfall below the floor."""

    settings: Settings
    floor: float
    components: Sequence[str] = ("floor",)

    @property
    def signed(self) -> bool:  # it reports an accuracy, not a change
        return False

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        challenger = s.challenger
        return (challenger.labeled, challenger.correct or 0) if challenger.labeled else None

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        n_c, c_c = pending
        if n_c < MIN_BATCH_LABELS:
            return None
        p_c = _smoothed(c_c, n_c)
        d = math.log(self.floor / p_c)
        variance = (1 - p_c) / (n_c * p_c)
        return [Evidence(gaussian_log_e(d, variance, self.settings.null, self.settings.alternative), d, variance)]

    def shown(self, internal: float) -> float:
        return self.floor * math.exp(-internal)  # the challenger's accuracy

    def describe(self, component: int) -> str:
        return f"challenger accuracy (floor {self.floor:g})"


def _drop(condition: Condition, boundary: Boundary, batch: float) -> RelativeDrop:
    threshold = condition.thresholds["accuracy_degradation_percentage"]
    return RelativeDrop(relative_settings(threshold, boundary, batch, worse_is_lower=True))


def _floor(condition: Condition, boundary: Boundary, batch: float) -> BelowFloor:
    margin = -math.log1p(-condition.thresholds["accuracy_floor_margin"])
    return BelowFloor(Settings(0.0, margin, boundary, batch), condition.thresholds["accuracy_threshold"])


DETECTORS = (
    DetectorSpec("drop", 1, ("accuracy_degradation_percentage",), _drop),
    DetectorSpec("floor", 1, ("accuracy_threshold", "accuracy_floor_margin"), _floor),
)
EMITS = frozenset(
    {"challenger", "champion", "challenger_ci_low", "challenger_ci_high", "relative_drop", "p_value", "samples"}
    | {fact for spec in DETECTORS for fact in spec.facts()}
)


@dataclass(frozen=True, slots=True)
class AccuracyWindow:
    labels: RollingSums
    detectors: tuple[tuple[str, Detector], ...] = ()

    @classmethod
    def start(cls, condition: Condition, detectors: Sequence[tuple[str, Detector]] = ()) -> Self:
        return cls(RollingSums.empty(Labels._make, len(Labels._fields), condition.window_seconds), tuple(detectors))

    def add(self, s: Snapshot) -> Self:
        champion, challenger = s.champion, s.challenger
        if champion.labeled is None and challenger.labeled is None:
            return self
        row = Labels(champion.labeled or 0, champion.correct or 0, challenger.labeled or 0, challenger.correct or 0)
        return type(self)(self.labels.add(s.timestamp, row), advance(self.detectors, s))

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        n: Labels = self.labels.sums(s.timestamp)
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
