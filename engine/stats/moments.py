"""Means, deviations, quantiles and correlations, exact where they are kept incrementally.

Values kept in running sums are first turned into whole numbers on a fixed grid
(`quantize`), so adding and removing them is exact: a sum never drifts, never depends on
the order values came in, and a value that left the window leaves nothing behind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SCALE = 10**12  # grid of the quantized values: 1e-12, far below any metric's meaningful digits
_FSCALE = float(SCALE)


def quantize(value: float) -> int:
    """The nearest grid point, as a whole number of 1/SCALE units."""
    return round(value * _FSCALE)


def mean_std(count: int, total: int, squares: int) -> tuple[float, float]:
    """Mean and sample standard deviation from exact sums of quantized values (count >= 2)."""
    mean = total / count / _FSCALE
    spread = count * squares - total * total  # >= 0 exactly, by Cauchy-Schwarz on integers
    variance = spread / (count * (count - 1)) / (_FSCALE * _FSCALE)
    return mean, math.sqrt(variance)


def pearson(count: int, sx: int, sy: int, sxx: int, syy: int, sxy: int, flat: float) -> float | None:
    """Correlation from exact sums of quantized pairs; None when either side is constant up to `flat`."""
    if count < 3:
        return None
    vx, vy = count * sxx - sx * sx, count * syy - sy * sy
    if vx <= flat * count * max(_FSCALE * _FSCALE, sxx) or vy <= flat * count * max(_FSCALE * _FSCALE, syy):
        return None
    return max(-1.0, min(1.0, (count * sxy - sx * sy) / math.sqrt(vx) / math.sqrt(vy)))


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
