"""Latency histograms: quantiles and means from bucket counts, as Prometheus reads them."""

from __future__ import annotations

from collections.abc import Sequence


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
