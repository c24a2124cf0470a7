"""Derived facts, one module per condition: each owns its window rows by name and its facts.

    accuracy      accuracy.py      latency      latency.py      confidence_drift  confidence.py
    error_rate    errors.py        cache_performance  cache.py  throughput        throughput.py
    anomaly       anomaly.py

`TestWindows` is everything a test remembers about its metrics, as an immutable value:
`add` returns the next one. A condition whose module fails on a snapshot keeps its previous
window and reports `error`; the other conditions go on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from ..contract import Snapshot
from ..policy.model import Policy
from ..stats.sequential import Boundary, detector_level
from . import accuracy, anomaly, cache, confidence, errors, latency, throughput
from .reading import ConditionWindow, Reading
from .sequential import Detector, DetectorSpec

# condition name -> the module that derives its facts; the order is the policy's
MODULES: dict[str, ModuleType] = {
    "accuracy": accuracy,
    "latency": latency,
    "confidence_drift": confidence,
    "error_rate": errors,
    "cache_performance": cache,
    "throughput": throughput,
    "anomaly": anomaly,
}
WINDOWS: dict[str, type[Any]] = {
    "accuracy": accuracy.AccuracyWindow,
    "latency": latency.LatencyWindows,
    "confidence_drift": confidence.ConfidenceWindows,
    "error_rate": errors.ErrorWindows,
    "cache_performance": cache.CacheWindow,
    "throughput": throughput.ThroughputWindow,
    "anomaly": anomaly.AnomalyHistory,
}


# condition -> the sequential detectors its module offers
DETECTORS: dict[str, tuple[DetectorSpec, ...]] = {
    name: getattr(module, "DETECTORS", ()) for name, module in MODULES.items()
}


@dataclass(frozen=True, slots=True)
class Planned:
    """One sequential detector the policy uses, and where it alarms."""

    condition: str
    stem: str  # "accuracy.drop"
    spec: DetectorSpec
    boundary: Boundary


def sequential_plan(policy: Policy) -> tuple[Planned, ...]:
    """The detectors the policy's indicators use, each given an equal share of the false-alarm
    budget, split again equally over its components (Bonferroni)."""
    statistics = policy.statistics
    chosen = [
        (condition.name, f"{MODULES[condition.name].PREFIX}.{spec.name}", spec)
        for condition in policy.conditions
        for spec in DETECTORS[condition.name]
        if f"{MODULES[condition.name].PREFIX}.{spec.name}" in statistics.sequential
    ]
    return tuple(
        Planned(
            name,
            stem,
            spec,
            Boundary(
                detector_level(
                    statistics.false_alarms_per_test_day, statistics.batches_per_day, len(chosen) * spec.components
                )
            ),
        )
        for name, stem, spec in chosen
    )


# condition -> its facts' short names -> the names the rules see ("accuracy" -> "challenger" -> "accuracy.challenger")
_NAMES = {name: {key: f"{module.PREFIX}.{key}" for key in module.EMITS} for name, module in MODULES.items()}


def horizon(policy: Policy) -> float:
    """How far back anything a test remembers about its metrics reaches: the longest window."""
    return max(max(c.window_seconds, c.baseline_window_seconds or 0.0) for c in policy.conditions)


def emitted_facts() -> frozenset[str]:
    """Every fact name the engine can emit: what the policy catalog must list, no more, no less."""
    return frozenset(f"{module.PREFIX}.{name}" for module in MODULES.values() for name in module.EMITS)


@dataclass(slots=True)
class Derived:
    """Facts for the rule engine (prefixed names), and each condition's samples, conclusiveness, errors."""

    facts: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Callable[[], str]] = field(default_factory=dict)  # fact -> says a statistic in words, on demand
    samples: dict[str, float] = field(default_factory=dict)
    conclusive: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    inconclusive: dict[str, str] = field(default_factory=dict)  # why a condition with samples is not judged
    label_lag: dict[str, float] = field(default_factory=dict)  # arm -> seconds its labels lag behind the snapshot


@dataclass(frozen=True, slots=True)
class TestWindows:
    windows: Mapping[str, ConditionWindow]
    failed: Mapping[str, str] = field(default_factory=dict)  # conditions whose last `add` failed, and why

    @classmethod
    def start(cls, policy: Policy) -> TestWindows:
        plan = sequential_plan(policy)
        windows = {}
        for c in policy.conditions:
            detectors = [
                (p.spec.name, Detector.start(p.spec.build(c, p.boundary, policy.statistics.batch_seconds)))
                for p in plan
                if p.condition == c.name
            ]
            windows[c.name] = WINDOWS[c.name].start(c, detectors) if detectors else WINDOWS[c.name].start(c)
        windows["anomaly"] = replace(windows["anomaly"], max_age=horizon(policy))
        return cls(windows)

    def add(self, s: Snapshot) -> TestWindows:
        windows: dict[str, ConditionWindow] = {}
        failed: dict[str, str] = {}
        for name, window in self.windows.items():
            try:
                windows[name] = window.add(s)
            except Exception as error:  # one condition's failure stays in that condition
                windows[name] = window
                failed[name] = _describe(error)
        return TestWindows(windows, failed)

    def read(self, s: Snapshot, policy: Policy) -> Derived:
        out = Derived()
        readings: dict[str, Reading] = {}
        for condition in policy.conditions:
            name = condition.name
            if name in self.failed:
                out.errors[name] = self.failed[name]
                out.samples[name], out.conclusive[name] = 0.0, False
                continue
            try:
                reading = self.windows[name].read(s, condition)
                samples = float(reading.samples)
                judged = samples >= condition.min_samples and samples > 0 and not reading.inconclusive
                found = _named_facts(name, reading) if judged else None
            except Exception as error:  # one condition's failure stays in that condition
                out.errors[name] = _describe(error)
                out.samples[name], out.conclusive[name] = 0.0, False
                continue
            readings[name] = reading
            out.samples[name], out.conclusive[name] = samples, found is not None
            if reading.inconclusive:
                out.inconclusive[name] = reading.inconclusive
            out.label_lag.update(reading.label_lag)
            if found:
                out.facts.update(found)
                names = _NAMES[name]
                out.notes.update({names[key]: text for key, text in reading.notes.items()})
        self._calibration(s, out, readings)
        return out

    def _calibration(self, s: Snapshot, out: Derived, readings: Mapping[str, Reading]) -> None:
        """confidence.calibration_gap needs accuracy's facts: the one fact two conditions share."""
        drift, accurate = readings.get("confidence_drift"), readings.get("accuracy")
        if drift is None or accurate is None or not out.conclusive.get("confidence_drift"):
            return
        if "accuracy.challenger" not in out.facts:
            return
        window = self.windows["confidence_drift"]
        assert isinstance(window, confidence.ConfidenceWindows)
        try:
            gap = window.calibration_gap(s.timestamp, accurate.facts)
        except Exception as error:
            out.errors["confidence_drift"] = _describe(error)
            return
        if gap is not None and _finite(gap):
            out.facts["confidence.calibration_gap"] = gap

    @property
    def nbytes(self) -> int:
        return sum(window.nbytes for window in self.windows.values())


def _named_facts(condition: str, reading: Reading) -> dict[str, float]:
    """The reading's finite facts under the names the rules see; KeyError for a fact the module did not declare."""
    names, facts = _NAMES[condition], {}
    for key, raw in reading.facts.items():
        value = float(raw)  # window sums are whole numbers of any size; facts are floats
        if value - value == 0.0:  # finite: not inf, not NaN
            facts[names[key]] = value
    return facts


def _finite(value: float) -> bool:
    return value - value == 0.0  # False for inf and NaN, and cheaper than math.isfinite's call


def _describe(error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 200 else text[:197] + "..."
