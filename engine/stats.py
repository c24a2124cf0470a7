"""Statistics as pure functions on plain numbers: no state, no clocks, no I/O.

Small inputs and one call per evaluation make plain floats faster than numpy here;
scipy's special functions give the distributions without per-call object overhead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import special

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there is no data."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges, as scipy
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def p_value_worse(champion_correct: int, champion_n: int, challenger_correct: int, challenger_n: int) -> float:
    """One-sided pooled two-proportion z-test of 'the challenger's accuracy is lower'."""
    if champion_n <= 0 or challenger_n <= 0:
        return 1.0
    p1, p2 = champion_correct / champion_n, challenger_correct / challenger_n
    pooled = (champion_correct + challenger_correct) / (champion_n + challenger_n)
    variance = pooled * (1 - pooled) * (1 / champion_n + 1 / challenger_n)
    if variance <= 0:
        return 0.0 if p2 < p1 else 1.0
    z = (p1 - p2) / math.sqrt(variance)
    return float(special.ndtr(-z))


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Quantile from bucket counts, interpolated linearly within the bucket (as Prometheus does).

    `counts` has one more entry than `bounds`: the last bucket is (bounds[-1], +Inf), whose
    quantiles are reported as the highest finite bound.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0.0
    for index, count in enumerate(counts):
        if cumulative + count >= rank and count > 0:
            if index == len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index > 0 else 0.0
            upper = bounds[index]
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return bounds[-1]


def histogram_mean(bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Mean estimated from bucket midpoints; the +Inf bucket counts at the highest bound."""
    total = sum(counts)
    if total <= 0:
        return None
    weighted = 0.0
    for index, count in enumerate(counts):
        if index == len(bounds):
            weighted += count * bounds[-1]
        else:
            lower = bounds[index - 1] if index > 0 else 0.0
            weighted += count * (lower + bounds[index]) / 2
    return weighted / total


def ks_binned(sample: Sequence[float], reference: Sequence[float]) -> tuple[float, float] | None:
    """Two-sample Kolmogorov-Smirnov on binned data: (statistic, p-value).

    The statistic is the largest gap between the cumulative bin shares; the p-value is
    scipy's limiting Kolmogorov distribution (kstwobign) at sqrt(n*m/(n+m)) * D.
    """
    n, m = sum(sample), sum(reference)
    if n <= 0 or m <= 0:
        return None
    gap = cumulative_a = cumulative_b = 0.0
    for a, b in zip(sample, reference, strict=True):
        cumulative_a += a / n
        cumulative_b += b / m
        gap = max(gap, abs(cumulative_a - cumulative_b))
    effective = n * m / (n + m)
    return gap, float(special.kolmogorov(math.sqrt(effective) * gap))


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
