"""The pure statistics in engine.stats against scipy/numpy references and hand-computed values:
Wilson intervals, the two-proportion z-test, Prometheus-style histogram quantiles and means,
binned Kolmogorov-Smirnov, and the small helpers the anomaly detectors use."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from engine.stats import (
    histogram_mean,
    histogram_quantile,
    ks_binned,
    p_value_worse,
    quantile,
    wilson_interval,
)

# --- wilson_interval -------------------------------------------------------------------------

WILSON = [
    ("none-of-one", 0, 1),
    ("none-of-ten", 0, 10),
    ("all-of-ten", 10, 10),
    ("all-of-one", 1, 1),
    ("three-of-ten", 3, 10),
    ("half-of-two", 1, 2),
    ("five-percent-of-thousand", 50, 1000),
    ("almost-all-of-thousand", 999, 1000),
    ("large-n", 48_328, 53_784),
]


@pytest.mark.parametrize(("k", "n"), [pytest.param(k, n, id=i) for i, k, n in WILSON])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    """wilson_interval equals scipy's binomtest(k, n).proportion_ci(0.95, method='wilson')."""
    reference = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(reference.low, abs=1e-12)
    assert high == pytest.approx(reference.high, abs=1e-12)
    assert 0.0 <= low <= high <= 1.0


@pytest.mark.parametrize(("k", "n"), [pytest.param(3, 10, id="3-of-10"), pytest.param(999, 1000, id="999-of-1000")])
def test_wilson_interval_contains_proportion(k: int, n: int) -> None:
    """An interior proportion lies strictly inside its Wilson interval."""
    low, high = wilson_interval(k, n)
    assert low < k / n < high


@pytest.mark.parametrize(
    ("k", "n"),
    [
        pytest.param(0, 3, id="none-of-3"),
        pytest.param(0, 7, id="none-of-7"),
        pytest.param(10, 10, id="all-of-10"),
        pytest.param(13, 13, id="all-of-13"),
    ],
)
def test_wilson_interval_edges_are_exact(k: int, n: int) -> None:
    """At k = 0 the lower bound is exactly 0 and at k = n the upper bound is exactly 1, as in scipy."""
    low, high = wilson_interval(k, n)
    reference = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((reference.low, reference.high), abs=1e-12)
    assert low <= k / n <= high


@pytest.mark.parametrize("n", [pytest.param(0, id="zero"), pytest.param(-3, id="negative")])
def test_wilson_interval_without_data_is_unit_interval(n: int) -> None:
    """With no trials the interval is the whole of (0, 1)."""
    assert wilson_interval(0, n) == (0.0, 1.0)


# --- p_value_worse ---------------------------------------------------------------------------


def _pooled_z_reference(c1: int, n1: int, c2: int, n2: int) -> float:
    """One-sided pooled two-proportion z-test of 'challenger (2) is worse than champion (1)'."""
    p1, p2 = c1 / n1, c2 / n2
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(scipy_stats.norm.sf((p1 - p2) / se))


# (id, champion correct, champion n, challenger correct, challenger n)
Z_TESTS = [
    ("challenger-slightly-worse", 900, 1000, 880, 1000),
    ("challenger-much-worse", 900, 1000, 800, 1000),
    ("challenger-better", 880, 1000, 900, 1000),
    ("unequal-sizes", 48_328, 53_784, 5_300, 5_960),
    ("small-samples", 7, 10, 4, 10),
    ("tiny-difference-large-n", 90_100, 100_000, 90_000, 100_000),
]


@pytest.mark.parametrize(("c1", "n1", "c2", "n2"), [pytest.param(*rest, id=i) for i, *rest in Z_TESTS])
def test_p_value_worse_matches_pooled_z_test(c1: int, n1: int, c2: int, n2: int) -> None:
    """p_value_worse equals norm.sf of the pooled two-proportion z statistic."""
    assert p_value_worse(c1, n1, c2, n2) == pytest.approx(_pooled_z_reference(c1, n1, c2, n2), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("c1", "n1", "c2", "n2", "low", "high"),
    [
        pytest.param(900, 1000, 700, 1000, 0.0, 1e-6, id="challenger-worse-p-near-0"),
        pytest.param(700, 1000, 900, 1000, 1 - 1e-6, 1.0, id="challenger-better-p-near-1"),
    ],
)
def test_p_value_worse_direction(c1: int, n1: int, c2: int, n2: int, low: float, high: float) -> None:
    """A clearly worse challenger gives p near 0; a clearly better one gives p near 1."""
    assert low <= p_value_worse(c1, n1, c2, n2) <= high


@pytest.mark.parametrize(
    ("c1", "n1", "c2", "n2"),
    [
        pytest.param(50, 100, 50, 100, id="same-counts"),
        pytest.param(450, 500, 90, 100, id="same-rate-different-n"),
        pytest.param(1, 3, 2, 6, id="same-rate-small"),
    ],
)
def test_p_value_worse_equal_rates_is_half(c1: int, n1: int, c2: int, n2: int) -> None:
    """Equal accuracies (z = 0) give exactly p = 0.5."""
    assert p_value_worse(c1, n1, c2, n2) == 0.5


@pytest.mark.parametrize(
    ("c1", "n1", "c2", "n2"),
    [
        pytest.param(0, 100, 0, 50, id="both-never-correct"),
        pytest.param(100, 100, 50, 50, id="both-always-correct"),
        pytest.param(0, 0, 5, 10, id="champion-no-data"),
        pytest.param(5, 10, 0, 0, id="challenger-no-data"),
    ],
)
def test_p_value_worse_degenerate_is_one(c1: int, n1: int, c2: int, n2: int) -> None:
    """Zero pooled variance or an empty arm gives p = 1: no evidence that the challenger is worse."""
    assert p_value_worse(c1, n1, c2, n2) == 1.0


@settings(max_examples=200, deadline=None, database=None)
@given(st.data())
def test_p_value_worse_in_unit_interval_and_monotone(data: st.DataObject) -> None:
    """The p-value is in [0, 1] and does not rise when the challenger gets one more answer right."""
    n1 = data.draw(st.integers(1, 5000), label="n1")
    n2 = data.draw(st.integers(2, 5000), label="n2")
    c1 = data.draw(st.integers(0, n1), label="c1")
    c2 = data.draw(st.integers(0, n2 - 1), label="c2")
    p = p_value_worse(c1, n1, c2, n2)
    assert 0.0 <= p <= 1.0
    if c1 + c2 > 0 and c1 + c2 + 1 < n1 + n2:  # both readings have non-zero variance
        assert p_value_worse(c1, n1, c2 + 1, n2) >= p


# --- histogram_quantile ----------------------------------------------------------------------

BOUNDS = (1.0, 2.0, 4.0)  # buckets [0,1], (1,2], (2,4], (4,+Inf)

# (id, q, counts, expected)
QUANTILES = [
    ("median-at-first-bucket-top", 0.5, (10, 10, 0, 0), 1.0),
    ("quarter-inside-first-bucket-from-zero", 0.25, (10, 10, 0, 0), 0.5),
    ("three-quarters-inside-second-bucket", 0.75, (10, 10, 0, 0), 1.5),
    ("q1-is-top-of-last-non-empty-bucket", 1.0, (10, 10, 0, 0), 2.0),
    ("interpolates-in-wide-bucket", 0.5, (0, 0, 4, 0), 3.0),
    ("interpolates-tenth", 0.1, (0, 0, 10, 0), 2.2),
    ("q0-is-lower-edge-of-first-non-empty-bucket", 0.0, (0, 3, 0, 0), 1.0),
    ("q0-with-non-empty-first-bucket", 0.0, (5, 0, 0, 0), 0.0),
    ("inf-bucket-reports-highest-finite-bound", 0.5, (0, 0, 0, 5), 4.0),
    ("inf-bucket-q1", 1.0, (1, 0, 0, 9), 4.0),
    ("before-inf-bucket", 0.05, (1, 0, 0, 9), 0.5),
    ("skips-empty-middle-bucket", 0.6, (5, 0, 5, 0), 2.4),
    ("p95-across-buckets", 0.95, (50, 30, 20, 0), 3.5),
    ("float-counts", 0.5, (0.5, 0.5, 0, 0), 1.0),
]


@pytest.mark.parametrize(("q", "counts", "expected"), [pytest.param(q, c, e, id=i) for i, q, c, e in QUANTILES])
def test_histogram_quantile_prometheus_semantics(q: float, counts: tuple[float, ...], expected: float) -> None:
    """The quantile interpolates linearly inside its bucket from 0 below the first bound; +Inf reports the top bound."""
    assert histogram_quantile(q, BOUNDS, counts) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "counts",
    [pytest.param((0, 0, 0, 0), id="all-zero"), pytest.param((), id="no-buckets")],
)
def test_histogram_quantile_empty_is_none(counts: tuple[int, ...]) -> None:
    """A histogram with no observations has no quantile."""
    assert histogram_quantile(0.5, BOUNDS, counts) is None


@st.composite
def _histograms(draw: st.DrawFn) -> tuple[list[float], list[int]]:
    bounds = sorted(draw(st.sets(st.floats(1e-3, 1e6, allow_nan=False), min_size=1, max_size=8)))
    counts = draw(st.lists(st.integers(0, 1000), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    if sum(counts) == 0:
        counts[draw(st.integers(0, len(counts) - 1))] = 1
    return bounds, counts


@settings(max_examples=300, deadline=None, database=None)
@given(_histograms(), st.lists(st.floats(0.0, 1.0), min_size=2, max_size=10))
def test_histogram_quantile_monotone_and_bounded(histogram: tuple[list[float], list[int]], qs: list[float]) -> None:
    """The quantile never decreases as q grows and stays within [0, the highest finite bound]."""
    bounds, counts = histogram
    found = [histogram_quantile(q, bounds, counts) for q in sorted(qs)]
    values = [v for v in found if v is not None]
    assert len(values) == len(found)
    slack = 1e-12 * bounds[-1]  # a + (b - a) may round one ulp past b
    assert all(0.0 <= value <= bounds[-1] + slack for value in values)
    assert all(later >= earlier - slack for earlier, later in pairwise(values))


# --- histogram_mean --------------------------------------------------------------------------

# (id, counts, expected)
MEANS = [
    ("uniform", (2, 2, 2, 2), (2 * 0.5 + 2 * 1.5 + 2 * 3.0 + 2 * 4.0) / 8),
    ("first-bucket-midpoint-from-zero", (7, 0, 0, 0), 0.5),
    ("middle-bucket-midpoint", (0, 0, 3, 0), 3.0),
    ("inf-bucket-at-highest-bound", (0, 0, 0, 9), 4.0),
    ("weighted", (1, 3, 0, 0), (0.5 + 3 * 1.5) / 4),
]


@pytest.mark.parametrize(("counts", "expected"), [pytest.param(c, e, id=i) for i, c, e in MEANS])
def test_histogram_mean_uses_midpoints(counts: tuple[int, ...], expected: float) -> None:
    """The mean weights each bucket's midpoint (0 is the first lower edge; +Inf counts at the top bound)."""
    assert histogram_mean(BOUNDS, counts) == pytest.approx(expected, abs=1e-12)


def test_histogram_mean_empty_is_none() -> None:
    """A histogram with no observations has no mean."""
    assert histogram_mean(BOUNDS, (0, 0, 0, 0)) is None


# --- ks_binned -------------------------------------------------------------------------------


def _expand(counts: list[int]) -> np.ndarray:
    """One observation per count, valued at its bin's index (any increasing per-bin value works)."""
    return np.repeat(np.arange(len(counts), dtype=float), counts)


# (id, sample, reference)
KS = [
    ("shifted-mass", [100, 200, 300, 400], [150, 250, 250, 350]),
    ("large-shift", [5000, 3000, 2000, 0], [4000, 3500, 2000, 500]),
    ("flat-vs-wobble", [1000] * 10, [900] + [1000] * 8 + [1100]),
    ("disjoint", [300, 0, 0], [0, 0, 300]),
    ("different-totals", [10, 20, 30, 40, 0], [1, 2, 3, 4, 90]),
    ("single-bin-each", [5, 0], [0, 7]),
    ("tiny", [1, 1], [2, 0]),
]


@pytest.mark.parametrize(("sample", "reference"), [pytest.param(a, b, id=i) for i, a, b in KS])
def test_ks_binned_statistic_matches_ks_2samp(sample: list[int], reference: list[int]) -> None:
    """The statistic equals scipy's ks_2samp statistic on the observations expanded from the bins."""
    result = ks_binned(sample, reference)
    assert result is not None
    statistic, _ = result
    assert statistic == pytest.approx(scipy_stats.ks_2samp(_expand(sample), _expand(reference)).statistic, abs=1e-12)


@pytest.mark.parametrize(("sample", "reference"), [pytest.param(a, b, id=i) for i, a, b in KS])
def test_ks_binned_p_value_is_kstwobign(sample: list[int], reference: list[int]) -> None:
    """The p-value is kstwobign.sf(sqrt(n*m/(n+m)) * D) for the returned D."""
    result = ks_binned(sample, reference)
    assert result is not None
    statistic, p_value = result
    n, m = sum(sample), sum(reference)
    expected = scipy_stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * statistic)
    assert p_value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("sample", "reference"),
    [
        pytest.param([1000] * 10, [900] + [1000] * 8 + [1100], id="p-around-0.7"),
        pytest.param([2000, 3000, 5000], [2100, 2950, 4950], id="p-moderate"),
        pytest.param([4000, 6000], [4200, 5800], id="p-small"),
        pytest.param([100, 200, 300, 400], [150, 250, 250, 350], id="p-tiny"),
    ],
)
def test_ks_binned_p_value_close_to_asymptotic_ks_2samp(sample: list[int], reference: list[int]) -> None:
    """For large samples the p-value is within 0.01 of ks_2samp(method='asymp')."""
    result = ks_binned(sample, reference)
    assert result is not None
    reference_p = scipy_stats.ks_2samp(_expand(sample), _expand(reference), method="asymp").pvalue
    assert result[1] == pytest.approx(reference_p, abs=0.01)


@pytest.mark.parametrize(
    "counts",
    [pytest.param([5, 10, 0, 3], id="small"), pytest.param([120, 111, 268, 311, 582, 942], id="large")],
)
def test_ks_binned_identical_histograms(counts: list[int]) -> None:
    """Identical histograms give D = 0 and p = 1."""
    assert ks_binned(counts, list(counts)) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("sample", "reference"),
    [
        pytest.param([0, 0, 0], [1, 2, 3], id="empty-sample"),
        pytest.param([1, 2, 3], [0, 0, 0], id="empty-reference"),
        pytest.param([], [], id="no-bins"),
    ],
)
def test_ks_binned_empty_is_none(sample: list[int], reference: list[int]) -> None:
    """Without observations on both sides there is no test."""
    assert ks_binned(sample, reference) is None


# --- quantile ---------------------------------------------------------------------------------

FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(FINITE, min_size=1, max_size=50), st.floats(0.0, 1.0))
def test_quantile_matches_numpy(values: list[float], q: float) -> None:
    """quantile of sorted values equals numpy.quantile with its default (linear) method."""
    ordered = sorted(values)
    assert quantile(ordered, q) == pytest.approx(float(np.quantile(ordered, q)), rel=1e-9, abs=1e-6)


def test_quantile_of_nothing_raises() -> None:
    """The quantile of an empty list is a ValueError."""
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)


def test_kolmogorov_sf_matches_scipy_everywhere() -> None:
    """The plain-math Kolmogorov survival function equals scipy.special.kolmogorov to 1e-14 (absolute,
    or relative in the far tail) on a dense grid across both series and their cut-over."""
    from scipy import special  # the reference only

    from engine.stats.ks import CUTOVER, kolmogorov_sf

    grid = np.concatenate([np.linspace(0.0, 12.0, 60_001), np.geomspace(1e-6, 0.3, 500), [CUTOVER, -1.0]])
    for x in grid:
        expected = float(special.kolmogorov(x))
        got = kolmogorov_sf(float(x))
        assert abs(got - expected) <= 1e-14 or abs(got - expected) <= 1e-12 * expected, (x, got, expected)
