"""What a study measured: false cut-backs of healthy tests, detection delays of regressions.

A *cut-back* is a decision whose action is reduce_rollout, rollback or immediate_rollback. An
*episode* is a run of consecutive cut-back decisions; its first decision counts once, so a test
rolled back for good (every later decision `rollback`) is one episode, not one per snapshot.

False cut-backs (A/A): episodes per test-day *at risk*, the time a test spent not cut back
(a decision whose previous one was not a cut-back is at risk for one interval), with the exact
95% Poisson interval of Garwood. A policy that rolls back every test early is at risk only
briefly, so its rate is high, as it should be.

Detection delay (regressions): from the change's start to the first decision on an affected
interval (one ending after the start) that is a cut-back ("cut-back delay") or whose named
condition is triggered or critical ("condition delay"). A test already in that state at the
last decision before the change shows nothing new and is counted as `already`, not measured.
Quantiles count a test with no such decision by the end of the run as an infinite delay.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from .effects import Effect
from .generator import LateLabels
from .runner import CUT_BACK, StudyResult, TestRun

DAY = 86_400.0
LEVEL = 0.95


@dataclass(frozen=True, slots=True)
class Rate:
    """A Poisson count over an exposure, per test-day, with its exact (Garwood) interval."""

    count: int
    days: float
    rate: float
    low: float
    high: float


def garwood(count: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact two-sided interval of a Poisson mean having seen `count` events (Garwood 1936)."""
    alpha = 1 - level
    low = float(stats.chi2.ppf(alpha / 2, 2 * count)) / 2 if count > 0 else 0.0
    high = float(stats.chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2
    return low, high


def rate(count: int, days: float, level: float = LEVEL) -> Rate:
    low, high = garwood(count, level)
    if days <= 0:
        return Rate(count, days, float("nan"), 0.0, float("inf"))
    return Rate(count, days, count / days, low / days, high / days)


def cut(run: TestRun) -> np.ndarray:
    """Whether each evaluated decision is a cut-back."""
    return run.actions >= CUT_BACK


def episode_starts(run: TestRun) -> np.ndarray:
    """Indexes of the decisions that start a cut-back episode."""
    c = cut(run)
    before = np.concatenate(([False], c[:-1]))
    return np.flatnonzero(c & ~before)


def at_risk(run: TestRun) -> int:
    """Decisions whose previous decision was not a cut-back (implied rollbacks never are)."""
    c = cut(run)
    return int(len(c) - np.count_nonzero(c[:-1]))


def quantile(values: Sequence[float], q: float) -> float | None:
    """An observed value at quantile q (inverted CDF); infinities stand for misses. None when empty."""
    if not values:
        return None
    return float(np.quantile(np.array(values, dtype=float), q, method="inverted_cdf"))


@dataclass(frozen=True, slots=True)
class FalseCutBacks:
    tests: int
    test_days: float  # simulated
    rate: Rate  # episodes per test-day at risk
    tests_cut_back: int
    decisions: int  # including the implied `rollback`s after a test is rolled back
    cutback_decisions: int
    first_median: float | None  # seconds to a test's first cut-back; inf when most tests have none
    first_by: dict[str, int]  # triggered_by of each episode's first decision
    first_conditions: dict[str, int]  # conditions triggered at the start of each episode
    first_indicators: dict[str, int]  # indicators counting (fired, held for their `for`) at the start of each episode
    triggered_share: dict[str, float]  # of evaluated decisions, per condition: triggered or critical


def false_cutbacks(study: StudyResult, before: float | None = None) -> FalseCutBacks:
    """False cut-backs of the study's tests; `before` (seconds) keeps only decisions up to then."""
    episodes = risk = decisions = cutbacks = with_any = 0
    firsts: list[float] = []
    by: Counter[str] = Counter()
    named: Counter[str] = Counter()
    indicators: Counter[str] = Counter()
    triggered = np.zeros(len(study.conditions))
    evaluated = 0
    days = 0.0
    for run in study.runs:
        keep = len(run.times) if before is None else int(np.searchsorted(run.times, before, side="right"))
        implied = run.implied if before is None else 0
        part = _head(run, keep)
        starts = episode_starts(part)
        episodes += len(starts)
        risk += at_risk(part)
        decisions += keep + implied
        cutbacks += int(np.count_nonzero(cut(part))) + implied
        with_any += bool(len(starts))
        firsts.append(float(part.times[starts[0]]) if len(starts) else float("inf"))
        days += (keep + implied) * run.interval / DAY
        for index in starts:
            by[run.cause_names[part.causes[index]] or "-"] += 1
            for bit, name in enumerate(study.conditions):
                if part.triggered[index] >> bit & 1:
                    named[name] += 1
        for index, counting in part.episode_indicators:
            if index < keep:
                indicators.update(counting)
        for bit in range(len(study.conditions)):
            triggered[bit] += np.count_nonzero(part.triggered >> bit & 1)
        evaluated += keep
    interval = study.spec.config.interval
    return FalseCutBacks(
        tests=len(study.runs),
        test_days=days,
        rate=rate(episodes, risk * interval / DAY),
        tests_cut_back=with_any,
        decisions=decisions,
        cutback_decisions=cutbacks,
        first_median=quantile(firsts, 0.5),
        first_by=dict(by.most_common()),
        first_conditions=dict(named.most_common()),
        first_indicators=dict(indicators.most_common()),
        triggered_share={
            name: float(triggered[bit] / evaluated) if evaluated else 0.0 for bit, name in enumerate(study.conditions)
        },
    )


def _head(run: TestRun, keep: int) -> TestRun:
    if keep == len(run.times):
        return run
    return TestRun(
        run.index, run.seed, keep, run.interval, run.times[:keep], run.actions[:keep], run.scores[:keep],
        run.targets[:keep], run.triggered[:keep], run.critical[:keep], run.causes[:keep], run.cause_names,
        tuple(item for item in run.episode_indicators if item[0] < keep),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Delays:
    """Delays of one kind of reaction to one effect, over a study's tests."""

    tests: int  # measured: not already reacting at the change
    already: int  # already cut back (or the condition already triggered) just before the change
    detected: int
    missed: int  # no reaction by the end of the run
    median: float | None  # seconds; inf when most measured tests missed
    p90: float | None
    max: float | None  # of the detected
    values: tuple[float, ...] = field(default=(), repr=False)  # per measured test; inf for a miss


@dataclass(frozen=True, slots=True)
class Detection:
    effect: Effect
    condition: str
    cutback: Delays
    condition_delay: Delays
    before_change: FalseCutBacks | None  # false cut-backs before the change (None when it starts at 0)
    # late labels and an accuracy change: the cut-back delay from the first challenger labels that carry it
    after_labels: Delays | None = None


def detection(study: StudyResult, effect: Effect) -> Detection:
    bit = study.conditions.index(effect.condition) if effect.condition in study.conditions else None
    cut_events = [cut(run) for run in study.runs]
    cond_events = [
        (run.triggered >> bit & 1).astype(bool) if bit is not None else np.zeros(len(run.times), dtype=bool)
        for run in study.runs
    ]
    before = false_cutbacks(study, before=effect.at) if effect.at > 0 else None
    after_labels = None
    config = study.spec.config
    if config.labels == "late" and effect.kind == "accuracy":
        carried = [LateLabels.first_carrying(config, run.seed, effect.at) for run in study.runs]
        after_labels = delays(study.runs, cut_events, effect.at, [math.inf if t is None else t for t in carried])
    return Detection(
        effect,
        effect.condition,
        delays(study.runs, cut_events, effect.at),
        delays(study.runs, cond_events, effect.at),
        before,
        after_labels,
    )


def delays(
    runs: Sequence[TestRun], events: Sequence[np.ndarray], at: float, since: Sequence[float] | None = None
) -> Delays:
    """From `at` to each run's first event on an affected decision (time > at); measured from each run's
    own `since` instead when given (an event before it counts as no delay)."""
    values: list[float] = []
    already = 0
    for number, (run, event) in enumerate(zip(runs, events, strict=True)):
        first = int(np.searchsorted(run.times, at, side="right"))  # first affected decision
        if first > 0 and event[first - 1]:
            already += 1
            continue
        hits = np.flatnonzero(event[first:])
        origin = at if since is None else since[number]
        values.append(max(0.0, float(run.times[first + hits[0]] - origin)) if len(hits) else float("inf"))
    detected = [v for v in values if v != float("inf")]
    return Delays(
        tests=len(values),
        already=already,
        detected=len(detected),
        missed=len(values) - len(detected),
        median=quantile(values, 0.5),
        p90=quantile(values, 0.9),
        max=max(detected) if detected else None,
        values=tuple(values),
    )
