"""Proportions: the Wilson interval and the one-sided two-proportion test, on whole counts."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there is no data."""
    if n <= 0:
        return 0.0, 1.0
    successes = min(max(successes, 0), n)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / denominator
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
    return 0.5 * math.erfc(z / math.sqrt(2))  # the normal survival function at z
