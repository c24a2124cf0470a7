"""Error rate: the challenger's errors by category and retries over the window, the champion's
rate beside it, the run of back-to-back windows whose rate kept rising, and the sequential
detector of the challenger's error rates against the champion's, in total and by category
(`increase_*`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Self

from ..contract import ERROR_CATEGORIES, Arm, Snapshot
from ..policy.model import Condition
from ..stats.sequential import Boundary, binomial_log_e
from .reading import Reading
from .sequential import Detector, Detectors, DetectorSpec, Evidence, Settings, advance, relative_settings
from .windows import RollingSums

PREFIX = "errors"
KINDS = ("total", *ERROR_CATEGORIES)


@dataclass(frozen=True, slots=True)
class RateIncrease:
    """The challenger's error rate over the champion's, in total and per category, by the
    conditional binomial test of count data (Lindon, Sanden, Shirikian 2022): given both arms'
    errors in a snapshot, the challenger's share of them is Binomial with a mean set by the arms'
    requests and the rate ratio, so each snapshot gives an exact likelihood-ratio e-value for
    'ratio <= null' and a batch multiplies its snapshots'. No normal approximation: it holds
    for a handful of errors as for millions."""

    settings: Settings
    components: Sequence[str] = KINDS

    @property
    def signed(self) -> bool:
        return True

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        champion, challenger = s.champion, s.challenger
        if champion.errors is None or challenger.errors is None:
            return None
        n_h, n_c = champion.requests, challenger.requests
        mine = (sum(challenger.errors.values()), *(challenger.errors[c] for c in ERROR_CATEGORIES))
        theirs = (sum(champion.errors.values()), *(champion.errors[c] for c in ERROR_CATEGORIES))
        if n_h <= 0 or n_c <= 0:
            return (0.0,) * len(KINDS) + mine + theirs + (0.0, 0.0)
        null = n_c * math.exp(self.settings.null)
        alternative = n_c * math.exp(self.settings.alternative)
        p_null, p_alt = null / (null + n_h), alternative / (alternative + n_h)
        # binomial_log_e(x, x + y, p_null, p_alt), with its two logs computed once for all kinds
        per_mine, per_theirs = binomial_log_e(1, 1, p_null, p_alt), binomial_log_e(0, 1, p_null, p_alt)
        log_e = tuple(x * per_mine + y * per_theirs for x, y in zip(mine, theirs, strict=True))
        return log_e + mine + theirs + (n_c, n_h)

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        k = len(KINDS)
        log_e, mine, theirs, (n_c, n_h) = pending[:k], pending[k : 2 * k], pending[2 * k : 3 * k], pending[3 * k :]
        if n_c <= 0 or n_h <= 0:
            return None
        out: list[Evidence | None] = []
        for e, x, y in zip(log_e, mine, theirs, strict=True):
            if x + y <= 0:
                out.append(None)
                continue
            d = math.log((x + 0.5) / n_c) - math.log((y + 0.5) / n_h)
            out.append(Evidence(e, d, 1 / (x + 0.5) + 1 / (y + 0.5)))
        return out

    def shown(self, internal: float) -> float:
        return math.expm1(internal)  # the relative increase of the rate

    def describe(self, component: int) -> str:
        return f"challenger {KINDS[component]} error rate vs champion"


def _increase(condition: Condition, boundary: Boundary, batch: float) -> RateIncrease:
    threshold = condition.thresholds["error_rate_increase"]
    return RateIncrease(relative_settings(threshold, boundary, batch, worse_is_lower=False).clustered())


DETECTORS = (DetectorSpec("increase", len(KINDS), ("error_rate_increase",), _increase),)
EMITS = frozenset(
    {fact for spec in DETECTORS for fact in spec.facts()}
    | {
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
    champion: RollingSums
    challenger: RollingSums
    trend: Tumbling
    detectors: Detectors = ()

    @classmethod
    def start(cls, condition: Condition, detectors: Sequence[tuple[str, Detector]] = ()) -> Self:
        window = condition.window_seconds
        empty = RollingSums.empty(ErrorCounts._make, len(ErrorCounts._fields), window)
        return cls(window, empty, empty, Tumbling(), tuple(detectors))

    def add(self, s: Snapshot) -> Self:
        champion, challenger, trend = self.champion, self.challenger, self.trend
        if s.champion.errors is None and s.challenger.errors is None:
            return self
        champion = champion.add(s.timestamp, _counts(s.champion))
        challenger = challenger.add(s.timestamp, _counts(s.challenger))
        if s.challenger.errors is not None:
            trend = trend.add(s.timestamp, self.window, s.challenger.requests, sum(s.challenger.errors.values()))
        return type(self)(self.window, champion, challenger, trend, advance(self.detectors, s))

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        mine: ErrorCounts = self.challenger.sums(s.timestamp)
        theirs: ErrorCounts = self.champion.sums(s.timestamp)
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
        reading = Reading(mine.requests, facts)
        for name, detector in self.detectors:
            detector.read(name, reading)
        return reading

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
