"""The standard study that `make quality` runs (`abguard simulate --standard`): one fixed set of
scenarios, so numbers measured on different days or policies can be set side by side.

    A/A, diurnal traffic, 24 h tests, at 2 and at 100 labels/s per arm: false cut-backs per test-day
    regressions, diurnal traffic, 100 labels/s, 4 h tests, each from the start and from 2 h on:
        accuracy -7% relative (champion 0.88 -> 0.818)
        accuracy -5% relative with champion 0.95 (-> 0.9025, above the 0.85 floor: only the
            comparison with the champion can see it)
        latency +60% (median 1.0 -> 1.6 ms, p95 2.85 ms: under the absolute limits)
        confidence shifted to a binned KS distance of 0.2
"""

from __future__ import annotations

from .effects import Effect
from .generator import StreamConfig
from .runner import StudySpec

AA_TESTS, AA_HOURS = 200, 24.0
REGRESSION_TESTS, REGRESSION_HOURS = 40, 4.0
ONSETS = (0.0, 7200.0)
REGRESSIONS: tuple[tuple[str, Effect, float], ...] = (  # name, effect (its start set per onset), champion accuracy
    ("accuracy -7%", Effect("accuracy", -0.07), 0.88),
    ("accuracy -5% (champion 0.95)", Effect("accuracy", -0.05), 0.95),
    ("latency +60%", Effect("latency", 0.6), 0.88),
    ("confidence KS 0.2", Effect("confidence", 0.2), 0.88),
)


def standard_studies(seed: int = 0) -> list[StudySpec]:
    studies = [
        StudySpec(
            f"A/A, {rate:g} labels/s",
            StreamConfig(hours=AA_HOURS, traffic="diurnal", label_rate=rate),
            AA_TESTS,
            seed,
        )
        for rate in (2.0, 100.0)
    ]
    for name, effect, accuracy in REGRESSIONS:
        for at in ONSETS:
            config = StreamConfig(
                hours=REGRESSION_HOURS,
                traffic="diurnal",
                label_rate=100.0,
                accuracy=accuracy,
                effects=(Effect(effect.kind, effect.size, at),),
            )
            studies.append(StudySpec(name, config, REGRESSION_TESTS, seed))
    return studies
