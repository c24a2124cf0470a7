"""Two-sample Kolmogorov-Smirnov on binned data."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import special


def ks_binned(sample: Sequence[float], reference: Sequence[float]) -> tuple[float, float] | None:
    """(statistic, p-value) of two binned samples.

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
