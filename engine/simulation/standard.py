"""The standard study that `make quality` runs (`abguard simulate --standard`): one fixed set of
scenarios, so numbers measured on different days or policies can be set side by side.

    A/A, diurnal traffic, 24 h tests: false cut-backs per test-day
        at 2 and at 100 labels/s per arm (the light latency model)
        realistic latency: heavy tails and GC pauses in both arms (a pause slows 1-3% of an
            arm's requests in one snapshot to ~20 ms, its mean +40%)
        late labels: per arm, in bursts every 5-20 minutes, 10-30 minutes late; champion 0.95
            and 0.88, challenger at 20%, 10 labels/s
    a shift both arms share: accuracy x 0.93 for both from 1 h on (below the 0.85 floor); the
        challenger is no worse, so every cut-back is a false one; with prompt labels and with
        late ones (champion 0.95 -> 0.8835)
    regressions, diurnal traffic, 100 labels/s, 4 h tests, each from the start and from 2 h on:
        accuracy -7% relative (champion 0.88 -> 0.818)
        accuracy -5% relative with champion 0.95 (-> 0.9025, above the 0.85 floor: only the
            comparison with the champion can see it)
        latency +60% (median 1.0 -> 1.6 ms, p95 2.85 ms: under the absolute limits)
        confidence shifted to a binned KS distance of 0.2
        tail: 2% of the challenger's requests at ~6 ms (p99 doubles), realistic latency
        error rate x4 (1% -> 4%)
        a small challenger: 1% of the traffic, 0.5 labels/s (15 a snapshot), accuracy -15%
        late labels, per arm, challenger at 20%: accuracy -6% with champion 0.95 and with 0.88
            (6 h tests, 10 labels/s)
"""

from __future__ import annotations

from dataclasses import replace

from .effects import Effect
from .generator import StreamConfig
from .runner import StudySpec

AA_TESTS, AA_HOURS = 200, 24.0
REALISTIC_TESTS = 100
SHARED_TESTS, SHARED_HOURS = 40, 6.0
REGRESSION_TESTS, REGRESSION_HOURS = 40, 4.0
ONSETS = (0.0, 7200.0)
BASE = StreamConfig(hours=REGRESSION_HOURS, traffic="diurnal", label_rate=100.0)
REGRESSIONS: tuple[tuple[str, Effect, StreamConfig], ...] = (  # name, effect (its start set per onset), stream
    ("accuracy -7%", Effect("accuracy", -0.07), BASE),
    ("accuracy -5% (champion 0.95)", Effect("accuracy", -0.05), replace(BASE, accuracy=0.95)),
    ("latency +60%", Effect("latency", 0.6), BASE),
    ("confidence KS 0.2", Effect("confidence", 0.2), BASE),
    ("tail: 2% at 6 ms (realistic latency)", Effect("tail", 0.02), replace(BASE, latency_model="realistic")),
    ("error rate x4", Effect("error_rate", 3.0), BASE),
    (
        "accuracy -15%, challenger at 1%, 0.5 labels/s",
        Effect("accuracy", -0.15),
        replace(BASE, rollout=1.0, challenger_label_rate=0.5),
    ),
    (
        "accuracy -6%, late labels (champion 0.95, challenger at 20%)",
        Effect("accuracy", -0.06),
        replace(BASE, hours=6.0, label_rate=10.0, accuracy=0.95, rollout=20.0, labels="late"),
    ),
    (
        "accuracy -6%, late labels (champion 0.88, challenger at 20%)",
        Effect("accuracy", -0.06),
        replace(BASE, hours=6.0, label_rate=10.0, rollout=20.0, labels="late"),
    ),
)


def standard_studies(seed: int = 0) -> list[StudySpec]:
    aa = StreamConfig(hours=AA_HOURS, traffic="diurnal")
    studies = [
        StudySpec(f"A/A, {rate:g} labels/s", replace(aa, label_rate=rate), AA_TESTS, seed) for rate in (2.0, 100.0)
    ]
    studies += [
        StudySpec(
            "A/A, realistic latency", replace(aa, label_rate=100.0, latency_model="realistic"), REALISTIC_TESTS, seed
        ),
        *(
            StudySpec(
                f"A/A, late labels (champion {accuracy:g})",
                replace(aa, label_rate=10.0, accuracy=accuracy, rollout=20.0, labels="late"),
                REALISTIC_TESTS,
                seed,
            )
            for accuracy in (0.95, 0.88)
        ),
        StudySpec(
            "shared shift: both arms' accuracy -7% from 1 h",
            replace(aa, hours=SHARED_HOURS, label_rate=100.0, effects=(Effect("shared", -0.07, 3600.0),)),
            SHARED_TESTS,
            seed,
        ),
        StudySpec(
            "shared shift, late labels (champion 0.95)",
            replace(
                aa,
                hours=SHARED_HOURS,
                label_rate=10.0,
                accuracy=0.95,
                rollout=20.0,
                labels="late",
                effects=(Effect("shared", -0.07, 3600.0),),
            ),
            SHARED_TESTS,
            seed,
        ),
    ]
    for name, effect, config in REGRESSIONS:
        for at in ONSETS:
            studies.append(
                StudySpec(
                    name, replace(config, effects=(Effect(effect.kind, effect.size, at),)), REGRESSION_TESTS, seed
                )
            )
    return studies
