"""A sequential detector of one comparison between the arms, as an immutable value.

Snapshots add their numbers to a pending batch; a batch closes once it spans the policy's
batch length and holds enough data, and each of the comparison's components then turns it
into an e-value that moves its CUSUM run (`stats.sequential`). Batches are at least `batch`
seconds of event time apart, so a test-day holds at most 86,400 / batch of them whatever
the snapshot rate: the count the false-alarm budget is spent over.

A facts module supplies the comparison: how a snapshot adds to the batch, what a closed batch
says per component, and how the internal scale (a log ratio, a CDF gap) reads to a person.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from operator import add
from typing import NamedTuple, Protocol

from ..contract import Snapshot
from ..contract.times import format_time
from ..policy.model import Condition
from ..stats.sequential import AT_ZERO, Boundary, Run, gaussian_log_e
from .reading import Reading

ALARM_SUFFIXES = ("alarm", "evidence", "estimate", "low", "high")
SHOWN_LIMIT = 700.0  # internal values are log ratios at most: exp(700) is still a float
# Alternatives of a mixture comparison, as multiples of the threshold's distance from the null: one
# component each, sharing the detector's budget, so a large effect is judged against a large alternative
# and gains evidence in proportion to its size (docs/statistics.md, "Power that grows with the effect").
MIXTURE = (1.0, 2.0, 4.0, 8.0)
# A comparison of request-level data (latency, errors, requests, confidences) needs this many batches to
# alarm: requests within a batch are not independent (a GC pause, a burst of errors), so one batch, however
# many requests it holds, may add at most 1/MIN_ALARM_BATCHES of the alarm level.
MIN_ALARM_BATCHES = 4


class Evidence(NamedTuple):
    """What one closed batch says about one component, on the comparison's internal scale."""

    log_e: float  # log e-value of the batch against the null
    estimate: float  # the batch's estimate of the effect
    variance: float  # its variance


@dataclass(frozen=True, slots=True)
class Settings:
    """What the policy asks of one detector: the null and alternative effects on the internal
    scale, where it alarms, the batch length, and the confidence sequence's mixing scale."""

    null: float
    alternative: float
    boundary: Boundary
    batch_seconds: float
    most_per_batch: float = math.inf  # nats one batch may add (its e-value capped: still an e-value)

    @property
    def alternatives(self) -> tuple[float, ...]:
        """The mixture's alternatives: MIXTURE multiples of the threshold's distance from the null."""
        gap = self.alternative - self.null
        return tuple(self.null + gap * multiple for multiple in MIXTURE)

    def clustered(self) -> Settings:
        """These settings for request-level data: a batch adds at most 1/MIN_ALARM_BATCHES of the alarm level."""
        return Settings(
            self.null, self.alternative, self.boundary, self.batch_seconds, self.boundary.enter / MIN_ALARM_BATCHES
        )

    @property
    def rho(self) -> float:
        """Mixture scale tuned to the information that resolves the indifference zone."""
        gap = abs(self.alternative - self.null) or 1.0
        return 2.0 * self.boundary.enter / (gap * gap)


class Comparison(Protocol):
    """One comparison of the arms: stateless, picklable, built from the policy. Its internal
    scale grows with the harm (a larger drop, gap or increase), its null and alternative too."""

    @property
    def settings(self) -> Settings: ...

    @property
    def components(self) -> Sequence[str]: ...

    @property
    def signed(self) -> bool:
        """Whether the person's scale is a change (shown with its sign) or a level."""

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        """This snapshot's contribution to the pending batch, or None when it carries none."""

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        """Each component's evidence from a whole batch; None while the batch holds too little."""

    def shown(self, internal: float) -> float:
        """The internal scale as a person reads it (a relative drop, a CDF gap); monotone."""

    def describe(self, component: int) -> str:
        """What one component measures, in words."""


@dataclass(frozen=True, slots=True)
class Detector:
    comparison: Comparison
    runs: tuple[Run, ...]
    pending: tuple[float, ...] | None = None
    began: float | None = None  # start time of the pending batch

    @classmethod
    def start(cls, comparison: Comparison) -> Detector:
        return cls(comparison, tuple(Run() for _ in comparison.components))

    def add(self, s: Snapshot) -> Detector:
        row = self.comparison.row(s)
        if row is None:
            return self
        if self.pending is None or self.began is None:
            pending, began = row, s.timestamp - s.interval_seconds
        else:
            pending, began = tuple(map(add, self.pending, row)), self.began
        settings = self.comparison.settings
        if s.timestamp - began < settings.batch_seconds * (1 - 1e-9):
            return Detector(self.comparison, self.runs, pending, began)
        judged = self.comparison.judge(pending)
        if judged is None:
            return Detector(self.comparison, self.runs, pending, began)
        cap = settings.most_per_batch
        runs = tuple(
            run
            if evidence is None
            else run.update(min(evidence.log_e, cap), evidence.estimate, evidence.variance, began, settings.boundary)
            for run, evidence in zip(self.runs, judged, strict=True)
        )
        return Detector(self.comparison, runs)

    def read(self, name: str, reading: Reading) -> None:
        """Put `name`_alarm, _evidence and, for the strongest component, its run's estimate and
        always-valid interval into the reading, and how to say it in words for the reasons."""
        facts = reading.facts
        if all(run is AT_ZERO or run.evidence == 0.0 for run in self.runs):  # healthy: nothing to report
            facts[f"{name}_alarm"], facts[f"{name}_evidence"] = 0.0, 0.0
            reading.notes[f"{name}_alarm"] = partial(self.words, 0)
            return
        strongest = max(range(len(self.runs)), key=self._strength)
        run = self.runs[strongest]
        facts[f"{name}_alarm"] = 1.0 if any(r.alarm for r in self.runs) else 0.0
        facts[f"{name}_evidence"] = run.evidence
        shown = self._interval(run)
        if shown is not None:
            facts[f"{name}_estimate"], facts[f"{name}_low"], facts[f"{name}_high"] = shown
        reading.notes[f"{name}_alarm"] = partial(self.words, strongest)

    def words(self, component: int) -> str:
        """Which boundary a component's evidence stands at, its estimate and interval, in words."""
        comparison, boundary, run = self.comparison, self.comparison.settings.boundary, self.runs[component]
        words = f"log-evidence {run.evidence:.1f} (alarm at {boundary.enter:.1f}, clears below {boundary.exit:.1f})"
        shown = self._interval(run)
        if shown is None or run.since is None:
            return words
        estimate, low, high = (_figure(value, comparison.signed) for value in shown)
        return f"{comparison.describe(component)} {estimate} [{low}, {high}] since {format_time(run.since)}; {words}"

    def _interval(self, run: Run) -> tuple[float, float, float] | None:
        """The run's estimate and always-valid interval on the person's scale."""
        interval = run.interval(self.comparison.settings.rho)
        if run.estimate is None or interval is None:
            return None
        low, high = sorted((self._shown(interval[0]), self._shown(interval[1])))
        return self._shown(run.estimate), low, high

    def _strength(self, index: int) -> tuple[bool, float, float]:
        """Components in alarm first, the largest estimated effect among them (the KS distance is
        the largest gap), then the most evidence."""
        run = self.runs[index]
        estimate = run.estimate  # internal scales grow with the harm: a larger drop, gap or increase
        size = estimate if run.alarm and estimate is not None else -math.inf
        return run.alarm, size, run.evidence

    def _shown(self, internal: float) -> float:
        """The person's scale of an internal value, kept where exp() of it is finite."""
        return self.comparison.shown(max(-SHOWN_LIMIT, min(SHOWN_LIMIT, internal)))


def _figure(value: float, signed: bool) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.1%}" if abs(value) < 10 else f"{value:{sign}.3g}"


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector a facts module offers: its fact stem, its components, the thresholds that set
    its null and alternative, and how to build its comparison from the policy."""

    name: str  # the stem of its facts: "drop" gives drop_alarm, drop_evidence, ...
    components: int
    needs: tuple[str, ...]  # threshold keys of its condition
    build: Callable[[Condition, Boundary, float], Comparison]

    def facts(self) -> tuple[str, ...]:
        return tuple(f"{self.name}_{suffix}" for suffix in ALARM_SUFFIXES)


def mixture_names(stem: str) -> tuple[str, ...]:
    """One component per alternative of the mixture: `drop`, `drop x2`, `drop x4`, ..."""
    return tuple(stem if multiple == 1 else f"{stem} x{multiple:g}" for multiple in MIXTURE)


def gaussian_mixture(d: float, variance: float, settings: Settings) -> list[Evidence | None]:
    """A batch's Gaussian e-value against each alternative of the mixture (one per component)."""
    null = settings.null
    return [
        Evidence(gaussian_log_e(d, variance, null, alternative), d, variance) for alternative in settings.alternatives
    ]


def relative_settings(threshold: float, boundary: Boundary, batch_seconds: float, *, worse_is_lower: bool) -> Settings:
    """A relative change that matters, as a log ratio: the alternative is the policy's
    threshold, the null half of it (the indifference zone between them is never promised)."""
    alternative = -math.log1p(-threshold) if worse_is_lower else math.log1p(threshold)
    return Settings(alternative / 2, alternative, boundary, batch_seconds)


Detectors = tuple[tuple[str, Detector], ...]  # a window's detectors by fact stem


def advance(detectors: Detectors, s: Snapshot) -> Detectors:
    return tuple((name, detector.add(s)) for name, detector in detectors)
