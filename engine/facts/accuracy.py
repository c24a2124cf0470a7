"""Accuracy: rolling correct/labeled of both arms, the challenger's Wilson interval, and the
one-sided test of 'the challenger is less accurate'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Self

from .. import stats
from ..contract import Snapshot
from ..policy.model import Condition
from .reading import Reading
from .windows import RollingSums

PREFIX = "accuracy"
EMITS = frozenset(
    {"challenger", "champion", "challenger_ci_low", "challenger_ci_high", "relative_drop", "p_value", "samples"}
)


class Labels(NamedTuple):
    champion_labeled: int
    champion_correct: int
    challenger_labeled: int
    challenger_correct: int


@dataclass(frozen=True, slots=True)
class AccuracyWindow:
    labels: RollingSums[Labels]

    @classmethod
    def start(cls, condition: Condition) -> Self:
        return cls(RollingSums.empty(Labels._make, len(Labels._fields), condition.window_seconds))

    def add(self, s: Snapshot) -> Self:
        champion, challenger = s.champion, s.challenger
        if champion.labeled is None and challenger.labeled is None:
            return self
        row = Labels(champion.labeled or 0, champion.correct or 0, challenger.labeled or 0, challenger.correct or 0)
        return type(self)(self.labels.add(s.timestamp, row))

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        n = self.labels.sums(s.timestamp)
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
        return Reading(n.challenger_labeled, facts)

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes
