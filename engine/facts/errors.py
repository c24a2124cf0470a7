"""Error rate: the challenger's errors by category and retries over the window, the champion's
rate beside it, and the run of back-to-back windows whose rate kept rising."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Self

from ..contract import ERROR_CATEGORIES, Arm, Snapshot
from ..policy.model import Condition
from .reading import Reading
from .windows import RollingSums

PREFIX = "errors"
EMITS = frozenset(
    {
        "rate",
        "champion_rate",
        *(f"{category}_rate" for category in ERROR_CATEGORIES),
        "retry_failure_rate",
        "rising_windows",
        "samples",
    }
)
RISE_TOLERANCE = 0.1  # an error window "rose" when its rate beats the previous one by 10%


class ErrorCounts(NamedTuple):
    requests: int
    extraction: int
    serialization: int
    timeout: int
    cache: int
    retries_attempted: int
    retries_failed: int

    @property
    def errors(self) -> int:
        return self.extraction + self.serialization + self.timeout + self.cache


@dataclass(frozen=True, slots=True)
class Tumbling:
    """Back-to-back windows of the challenger's error rate, for the rising trend."""

    index: int | None = None  # the window being filled
    requests: int = 0
    errors: int = 0
    last_rate: float | None = None  # of the last completed window
    rising: int = 0  # consecutive completed windows whose rate rose

    def add(self, t: float, window: float, requests: int, errors: int) -> Tumbling:
        index = math.floor(t / window)
        state = self
        if state.index is not None and state.index != index:
            rising, last_rate = state.rising, state.last_rate
            if state.requests > 0:
                rate = state.errors / state.requests
                rose = last_rate is not None and rate > last_rate * (1 + RISE_TOLERANCE) and rate > 0
                rising = rising + 1 if rose and state.index == index - 1 else 0
                last_rate = rate
            state = Tumbling(None, 0, 0, last_rate, rising)
        return Tumbling(index, state.requests + requests, state.errors + errors, state.last_rate, state.rising)


@dataclass(frozen=True, slots=True)
class ErrorWindows:
    window: float
    champion: RollingSums[ErrorCounts]
    challenger: RollingSums[ErrorCounts]
    trend: Tumbling

    @classmethod
    def start(cls, condition: Condition) -> Self:
        window = condition.window_seconds
        empty = RollingSums.empty(ErrorCounts._make, len(ErrorCounts._fields), window)
        return cls(window, empty, empty, Tumbling())

    def add(self, s: Snapshot) -> Self:
        champion, challenger, trend = self.champion, self.challenger, self.trend
        if s.champion.errors is None and s.challenger.errors is None:
            return self
        champion = champion.add(s.timestamp, _counts(s.champion))
        challenger = challenger.add(s.timestamp, _counts(s.challenger))
        if s.challenger.errors is not None:
            trend = trend.add(s.timestamp, self.window, s.challenger.requests, sum(s.challenger.errors.values()))
        return type(self)(self.window, champion, challenger, trend)

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        mine, theirs = self.challenger.sums(s.timestamp), self.champion.sums(s.timestamp)
        facts: dict[str, float] = {"samples": mine.requests}
        if mine.requests > 0:
            facts["rate"] = mine.errors / mine.requests
            for category in ERROR_CATEGORIES:
                facts[f"{category}_rate"] = getattr(mine, category) / mine.requests
            facts["rising_windows"] = self.trend.rising
        if mine.retries_attempted > 0:
            facts["retry_failure_rate"] = mine.retries_failed / mine.retries_attempted
        if theirs.requests > 0:
            facts["champion_rate"] = theirs.errors / theirs.requests
        return Reading(mine.requests, facts)

    @property
    def nbytes(self) -> int:
        return self.champion.nbytes + self.challenger.nbytes


def _counts(arm: Arm) -> ErrorCounts:
    if arm.errors is None:
        return ErrorCounts(0, 0, 0, 0, 0, 0, 0)
    attempted, failed = arm.retries or (0, 0)
    errors = arm.errors
    return ErrorCounts(
        arm.requests,
        errors["extraction"],
        errors["serialization"],
        errors["timeout"],
        errors["cache"],
        attempted,
        failed,
    )
