"""The sequential statistics against closed forms and scipy, and seeded Monte Carlo runs that
would fail if an e-value were mis-scaled, a boundary misplaced or a detector slow."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from engine.contract import Snapshot, parse_snapshot
from engine.contract.times import format_time
from engine.facts.accuracy import BelowFloor, RelativeDrop
from engine.facts.confidence import DistributionShift
from engine.facts.errors import RateIncrease
from engine.facts.sequential import MIXTURE, Comparison, Detector, Settings, relative_settings
from engine.facts.throughput import ShareDrop
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.stats.sequential import (
    Boundary,
    Run,
    binomial_log_e,
    detector_level,
    gaussian_log_e,
    mixture_half_width,
)
from tests.conftest import snapshot


@pytest.mark.parametrize(("estimate", "variance", "null", "alternative"), [(0.03, 1e-4, 0.025, 0.05), (-1, 4, 0, -2)])
def test_gaussian_log_e_is_the_log_likelihood_ratio(
    estimate: float, variance: float, null: float, alternative: float
) -> None:
    sd = math.sqrt(variance)
    expected = stats.norm.logpdf(estimate, alternative, sd) - stats.norm.logpdf(estimate, null, sd)
    assert gaussian_log_e(estimate, variance, null, alternative) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("effect", [-0.05, 0.0, 0.02, 0.025])
def test_gaussian_e_value_has_mean_at_most_one_for_every_null_effect(effect: float) -> None:
    """E[e] = exp((alt - null)(effect - null) / var): 1 at the null's edge, less inside it."""
    variance, null, alternative = 1e-4, 0.025, 0.05
    sd = math.sqrt(variance)
    mean, _ = integrate.quad(
        lambda x: math.exp(gaussian_log_e(x, variance, null, alternative)) * stats.norm.pdf(x, effect, sd),
        effect - 12 * sd,
        effect + 12 * sd,
    )
    closed = math.exp((alternative - null) * (effect - null) / variance)
    assert mean == pytest.approx(closed, rel=1e-6)
    assert mean <= 1 + 1e-6


@pytest.mark.parametrize(("n", "p_null", "p_alt"), [(40, 0.1, 0.2), (7, 0.6, 0.3), (1000, 0.01, 0.015)])
def test_binomial_e_value_is_exact(n: int, p_null: float, p_alt: float) -> None:
    """The log-likelihood ratio of scipy's pmf; its mean is 1 at p_null and below 1 beyond it."""
    xs = np.arange(n + 1)
    ours = np.array([binomial_log_e(float(x), float(n), p_null, p_alt) for x in xs])
    assert ours == pytest.approx(stats.binom.logpmf(xs, n, p_alt) - stats.binom.logpmf(xs, n, p_null), abs=1e-9)
    assert float(np.sum(np.exp(ours) * stats.binom.pmf(xs, n, p_null))) == pytest.approx(1.0, abs=1e-9)
    healthier = p_null - (p_alt - p_null) / 2  # on the far side of the null from the alternative
    assert float(np.sum(np.exp(ours) * stats.binom.pmf(xs, n, healthier))) < 1.0


def test_detector_level_spends_the_budget_over_the_day_and_the_statistics() -> None:
    assert detector_level(0.01, 2880, 6) == pytest.approx(math.log(2 * 2880 * 6 / 0.01))
    assert detector_level(0.02, 2880, 6) < detector_level(0.01, 2880, 6) < detector_level(0.01, 2880, 7)


def test_mixture_half_width_is_the_normal_mixture_boundary_over_information() -> None:
    v, rho, alpha = 250.0, 40.0, 0.05
    boundary = math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha**2)))
    assert mixture_half_width(v, rho, alpha) == pytest.approx(boundary / v)
    assert mixture_half_width(4 * v, rho) < mixture_half_width(v, rho)  # narrows as information grows


def test_the_interval_covers_the_effect_at_every_time_at_once() -> None:
    """Seeded: in 2,000 streams of 300 batches with varying precision, the 95% confidence sequence
    excludes the true effect at some time in at most 5% of them (a fixed-time interval re-checked
    every batch would exclude it in far more)."""
    rng = np.random.default_rng(11)
    streams, steps, effect, rho = 2000, 300, 0.3, 50.0
    variances = rng.uniform(0.5, 2.0, size=(streams, steps))
    estimates = rng.normal(effect, np.sqrt(variances))
    information = np.cumsum(1 / variances, axis=1)
    mean = np.cumsum(estimates / variances, axis=1) / information
    half = np.sqrt((information + rho) * np.log((information + rho) / (rho * 0.05**2))) / information
    assert half[3, 17] == pytest.approx(mixture_half_width(float(information[3, 17]), rho))
    ever_missed = np.any(np.abs(mean - effect) > half, axis=1).mean()
    naive = np.any(np.abs(mean - effect) > 1.96 / np.sqrt(information), axis=1).mean()
    assert ever_missed <= 0.05
    assert naive > 0.3


def test_a_run_alarms_at_the_entry_level_and_holds_until_the_exit_level() -> None:
    boundary = Boundary(10.0)
    run = Run()
    trace = []
    for log_e in (4, 4, 4, -3, -2, -2, 6, -9, -9):
        run = run.update(log_e, 0.1, 0.01, 0.0, boundary)
        trace.append((run.evidence, run.alarm))
    assert trace == [
        (4, False), (8, False), (12, True),  # enters at 10
        (9, True), (7, True),  # holds while above 5 (the exit level)...
        (5, False),  # ...and clears at it
        (11, True), (2, False), (0, False),  # a new entry; the evidence never goes below zero
    ]  # fmt: skip
    capped = Run().update(100.0, 0.1, 0.01, 0.0, boundary)
    assert capped.evidence == boundary.cap == 20.0  # so an alarm can clear soon after its cause ends


def test_a_run_reports_the_effect_since_its_evidence_last_stood_at_zero() -> None:
    boundary = Boundary(10.0)
    run = Run().update(-1.0, 5.0, 1.0, 0.0, boundary)  # stays at zero: remembers nothing
    assert (run.since, run.estimate) == (None, None)
    run = run.update(2.0, 0.2, 0.01, 30.0, boundary).update(2.0, 0.4, 0.03, 60.0, boundary)
    assert run.since == 30.0
    assert run.estimate == pytest.approx((0.2 / 0.01 + 0.4 / 0.03) / (1 / 0.01 + 1 / 0.03))
    interval, estimate = run.interval(rho=10.0), run.estimate
    assert interval is not None and estimate is not None
    assert interval[0] < estimate < interval[1]


def _entries(log_es: np.ndarray, boundary: Boundary) -> tuple[int, int]:
    """Entries into alarm, and batches spent in alarm."""
    run, entries, alarmed = Run(), 0, 0
    for log_e in log_es:
        was = run.alarm
        run = run.update(float(log_e), 0.0, 1.0, 0.0, boundary)
        entries += run.alarm and not was
        alarmed += run.alarm
    return entries, alarmed


def test_cusum_false_alarms_stay_within_2T_over_A_at_the_edge_of_the_null() -> None:
    """Seeded: 40,000 batches whose true effect is exactly the null, the worst case the budget
    covers; entries into alarm stay under 2T/A. A mis-signed e-value is in alarm almost always."""
    rng = np.random.default_rng(3)
    null, alternative, variance, level = 0.025, 0.05, 1e-4, 5.0
    estimates = rng.normal(null, math.sqrt(variance), 40_000)
    log_es = np.array([gaussian_log_e(float(x), variance, null, alternative) for x in estimates])
    bound = 2 * len(log_es) / math.exp(level)
    assert _entries(log_es, Boundary(level))[0] <= bound
    assert _entries(-log_es, Boundary(level))[1] > 0.9 * len(log_es)


def test_cusum_catches_the_alternative_in_about_level_over_KL_batches() -> None:
    """Seeded: a change to the alternative at batch 500 (after a healthy start) is caught within
    twice log(A) / KL batches in 95% of 400 runs; KL = (alt - null)^2 / (2 var)."""
    rng = np.random.default_rng(5)
    null, alternative, variance, level = 0.025, 0.05, 1e-4, 15.0
    kl = (alternative - null) ** 2 / (2 * variance)
    delays = []
    for _ in range(400):
        healthy = rng.normal(0.0, math.sqrt(variance), 500)
        changed = rng.normal(alternative, math.sqrt(variance), 100)
        run = Run()
        for step, estimate in enumerate(np.concatenate([healthy, changed])):
            run = run.update(
                gaussian_log_e(float(estimate), variance, null, alternative), 0.0, 1.0, 0.0, Boundary(level)
            )
            if run.alarm:
                delays.append(step - 500 + 1)
                break
    assert len(delays) == 400 and min(delays) >= 1  # nothing before the change
    assert float(np.quantile(delays, 0.95)) <= 2 * level / kl


START = 1_795_478_400.0  # 2026-11-24T00:00:00Z


def _snapshot(
    t: float, champion: Mapping[str, object], challenger: Mapping[str, object], rollout: float = 10.0
) -> Snapshot:
    stamp = format_time(START + t)
    return parse_snapshot(
        {
            "test_id": "t",
            "timestamp": stamp,
            "interval_seconds": 30,
            "rollout_percent": rollout,
            "champion": {"requests": 100_000, **champion},
            "challenger": {"requests": 100_000, **challenger},
        }
    )


LEVEL = 5.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("labels", [30, 60, 200])
@pytest.mark.parametrize("accuracy", [0.6, 0.88, 0.95])
def test_accuracy_e_values_keep_mean_at_most_one_at_the_null_edge_with_few_labels(labels: int, accuracy: float) -> None:
    """Seeded: the normal approximation behind the accuracy statistics, at the least batch they
    judge (30 labels per arm) and more: with the true effect exactly at the null, the mean e-value
    (20,000 batches, plus three standard errors) stays at or under 1, so the CUSUM keeps its budget."""
    rng = np.random.default_rng(labels * 1000 + round(accuracy * 100))
    draws = 20_000
    drop = RelativeDrop(relative_settings(0.05, Boundary(LEVEL), 30.0, worse_is_lower=True))
    challenger = accuracy * math.exp(-drop.settings.null)
    pairs = zip(rng.binomial(labels, accuracy, draws), rng.binomial(labels, challenger, draws), strict=True)
    e_drop = np.exp([_log_e(drop, (labels, a, labels, b)) for a, b in pairs])
    floor = BelowFloor(Settings(0.0, -math.log1p(-0.03), Boundary(LEVEL), 30.0), accuracy)  # exactly at the floor
    e_floor = np.exp([_log_e(floor, (labels, c)) for c in rng.binomial(labels, accuracy, draws)])
    for e in (e_drop, e_floor):
        assert e.mean() - 3 * e.std() / math.sqrt(draws) <= 1.0


def test_confidence_e_values_keep_mean_at_most_one_at_the_null_edge() -> None:
    """Seeded: 30 and 300 scores per arm whose cumulative shares differ by exactly the null (0.05)."""
    rng = np.random.default_rng(12)
    shift = DistributionShift(Settings(0.05, 0.1, Boundary(LEVEL), 30.0))
    for n in (30, 300):
        champion = rng.binomial(n, 0.3, 20_000)
        challenger = rng.binomial(n, 0.35, 20_000)  # share below the first edge 0.05 higher
        e = np.exp([_log_e(shift, (a, 0, 0, 0, 0, 0, 0, 0, 0, n - a, b, 0, 0, 0, 0, 0, 0, 0, 0, n - b))
                    for a, b in zip(champion, challenger, strict=True)])  # fmt: skip
        assert e.mean() - 3 * e.std() / math.sqrt(len(e)) <= 1.0


def test_error_rate_e_values_are_exact_at_the_null_ratio() -> None:
    """Summed over every split of a snapshot's errors, the mean e-value is exactly 1 at the null
    ratio of the arms' rates, whatever the traffic split, and under 1 for healthier ratios."""
    errors = RateIncrease(relative_settings(0.5, Boundary(LEVEL), 30.0, worse_is_lower=False))
    for n_c, n_h, total in ((10_000, 90_000, 12), (50_000, 50_000, 40)):
        for ratio, expect_one in ((math.exp(errors.settings.null), True), (1.0, False)):
            p = n_c * ratio / (n_c * ratio + n_h)  # the challenger's share of the errors at this ratio
            mean = 0.0
            for x in range(total + 1):
                champion = {"requests": n_h, "errors": _errors(total - x)}
                row = errors.row(_snapshot(30.0, champion, {"requests": n_c, "errors": _errors(x)}))
                assert row is not None
                mean += math.exp(row[1]) * stats.binom.pmf(x, total, p)  # row[1]: the extraction category's log e
            assert mean == pytest.approx(1.0, abs=1e-9) if expect_one else mean < 1.0


def _errors(extraction: int) -> dict[str, int]:
    return {"extraction": extraction, "serialization": 0, "timeout": 0, "cache": 0}


def _log_e(comparison: Comparison, pending: tuple[float, ...]) -> float:
    judged = comparison.judge(tuple(float(x) for x in pending))
    assert judged is not None and judged[0] is not None
    return judged[0].log_e


def test_large_effects_are_caught_in_the_first_batches() -> None:
    """Each comparison alarms within three 30 s batches on an effect twice its threshold."""
    rng = np.random.default_rng(9)
    level = 15.0
    cases: list[tuple[Comparison, list[Snapshot]]] = []
    drop = RelativeDrop(relative_settings(0.05, Boundary(level), 30.0, worse_is_lower=True))
    labels = [({"labeled": 3000, "correct": int(rng.binomial(3000, 0.88))},
               {"labeled": 3000, "correct": int(rng.binomial(3000, 0.88 * 0.9))}) for _ in range(3)]  # fmt: skip
    cases.append((drop, [_snapshot(30.0 * (i + 1), a, b) for i, (a, b) in enumerate(labels)]))
    shift = DistributionShift(Settings(0.05, 0.1, Boundary(level), 30.0))
    base = np.array([1, 1, 1, 2, 3, 5, 8, 12, 27, 40]) / 100
    moved = np.array([1, 1, 1, 2, 3, 5, 8, 32, 27, 20]) / 100  # KS 0.2 at the 0.8 edge
    hist = [({"confidence_histogram": rng.multinomial(4000, base).tolist()},
             {"confidence_histogram": rng.multinomial(4000, moved).tolist()}) for _ in range(3)]  # fmt: skip
    cases.append((shift, [_snapshot(30.0 * (i + 1), a, b) for i, (a, b) in enumerate(hist)]))
    throughput = ShareDrop(relative_settings(0.3, Boundary(level), 30.0, worse_is_lower=True))
    volume = [({"requests": 90_000}, {"requests": int(rng.poisson(10_000 * 0.4))}) for _ in range(3)]
    cases.append((throughput, [_snapshot(30.0 * (i + 1), a, b) for i, (a, b) in enumerate(volume)]))
    for comparison, snapshots in cases:
        detector = Detector.start(comparison)
        for s in snapshots:
            detector = detector.add(s)
        assert any(run.alarm for run in detector.runs), type(comparison).__name__


def test_a_batch_waits_for_its_length_and_its_least_data() -> None:
    """10 s snapshots make one batch per 30 s; a batch with too few labels waits for more."""
    drop = RelativeDrop(relative_settings(0.05, Boundary(15.0), 30.0, worse_is_lower=True))
    detector = Detector.start(drop)
    first = _snapshot(10.0, {"labeled": 20, "correct": 18}, {"labeled": 20, "correct": 18})
    snapshots = [replace(first, timestamp=first.timestamp + 10 * i, interval_seconds=10.0) for i in range(6)]
    began = []
    for s in snapshots:
        detector = detector.add(s)
        began.append(detector.began)
    t0 = first.timestamp - 10
    # 20 labels a snapshot: 30 s hold 60 >= 30, so batches close at 30 s and 60 s
    assert began == [t0, t0, None, t0 + 30, t0 + 30, None]
    sparse = Detector.start(drop)
    for s in snapshots:
        sparse = sparse.add(replace(s, champion=replace(s.champion, labeled=4, correct=3)))
    assert sparse.began == t0 and sparse.runs == (Run(),) * len(MIXTURE)  # 24 champion labels in 60 s: not judged yet


def test_a_tiny_significant_drop_at_a_million_labels_is_not_acted_on() -> None:
    """scenarios/tiny_accuracy_drop.jsonl: the windowed test calls a 1% relative drop significant
    (p < 1e-6) on ~10^6 labels a snapshot, the sequential statistic's evidence stays at zero (the
    null is 2.5%), and accuracy stays ok: significance alone never cuts traffic."""
    policy = load_effective([str(ROOT / "policies")])
    evaluator = Evaluator(policy)
    rows = [json.loads(line) for line in (ROOT / "scenarios" / "tiny_accuracy_drop.jsonl").read_text().splitlines()]
    for row in rows:
        decision = evaluator.evaluate(parse_snapshot(row))
        assert next(c for c in decision.conditions if c.name == "accuracy").status == "ok"
    last = parse_snapshot(rows[-1])
    facts = evaluator.state(last.test_id).windows.read(last, policy).facts
    assert facts["accuracy.p_value"] < 1e-6
    assert facts["accuracy.relative_drop"] == pytest.approx(0.01, abs=0.003)
    assert facts["accuracy.samples"] > 10**6
    assert (facts["accuracy.drop_alarm"], facts["accuracy.drop_evidence"]) == (0.0, 0.0)


def test_a_detectors_state_does_not_grow_with_the_tests_age() -> None:
    """O(1) per statistic: the default policy's detectors pickle to the same size after 2 h and
    after 24 h of 30 s snapshots (the windows are bounded separately)."""
    policy = load_effective([str(ROOT / "policies")])
    evaluator = Evaluator(policy)
    first = parse_snapshot(snapshot("age", 0))
    windows = evaluator.state("age").windows
    sizes = {}
    for step in range(24 * 120):
        windows = windows.add(replace(first, timestamp=first.timestamp + 30 * step))
        if step + 1 in (240, 24 * 120):
            detectors = [getattr(w, "detectors", ()) for w in windows.windows.values()]
            assert sum(len(d) for d in detectors) == len(policy.statistics.sequential)
            sizes[step + 1] = len(pickle.dumps(detectors))
    assert sizes[24 * 120] <= sizes[240] + 64
