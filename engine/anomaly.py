"""Anomaly ensemble: z-score, IQR fences, EWMA level shift and correlation break, each on the
challenger's own history; their agreement gives a confidence in [0, 1].

Each detector turns its reading r (relative to its cut-off) into a probability
0.6 * clip(r - 0.5, 0, 1): 0.3 at the cut-off, 0.6 at 1.5x and above. The ensemble
confidence is 1 - prod(1 - p): one detector alone never passes 0.6, two strong ones
reach 0.84, so the default 0.8 threshold needs detectors to agree.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from . import stats

MIN_HISTORY = 5
RECENT = 10
LATENCY, RPS = 1, 3  # columns of derive.ANOMALY_METRICS
DEFAULT_CUTOFFS = {"zscore": 3.0, "iqr_factor": 2.0, "ewma_shift": 3.0, "correlation_drop": 0.5}
EWMA_ALPHA = 0.5


def detect(series: npt.NDArray[np.float64], cutoffs: dict[str, float]) -> dict[str, float]:
    """Facts for the latest row of `series` (oldest first) against the rows before it."""
    cut = {**DEFAULT_CUTOFFS, **cutoffs}
    latest, history = series[-1], series[:-1]
    zscore_max = level_shift = 0.0
    outliers = 0
    for column in range(series.shape[1]):
        value = float(latest[column])
        past = [float(v) for v in history[:, column] if math.isfinite(v)]
        if not math.isfinite(value) or len(past) < MIN_HISTORY:
            continue
        mean, std = stats.mean_std(past)
        if std > 0:
            zscore_max = max(zscore_max, abs(value - mean) / std)
            recent = [float(v) for v in series[-RECENT:, column] if math.isfinite(v)]
            level_shift = max(level_shift, abs(stats.ewma(recent, EWMA_ALPHA) - mean) / std)
        ordered = sorted(past)
        q1, q3 = stats.quantile(ordered, 0.25), stats.quantile(ordered, 0.75)
        spread = q3 - q1
        if spread > 0 and not q1 - cut["iqr_factor"] * spread <= value <= q3 + cut["iqr_factor"] * spread:
            outliers += 1
    correlation_break = _correlation_break(series)
    probabilities = [
        _strength(zscore_max / cut["zscore"]),
        _strength(outliers / 2 + 0.5) if outliers else 0.0,
        _strength(level_shift / cut["ewma_shift"]),
        _strength(correlation_break / cut["correlation_drop"]),
    ]
    confidence = 1.0 - math.prod(1.0 - p for p in probabilities)
    return {
        "confidence": confidence,
        "zscore_max": zscore_max,
        "iqr_outliers": float(outliers),
        "level_shift": level_shift,
        "correlation_break": correlation_break,
    }


def _strength(ratio: float) -> float:
    return 0.6 * min(1.0, max(0.0, ratio - 0.5))


def _correlation_break(series: npt.NDArray[np.float64]) -> float:
    """How much the usual requests/latency correlation weakened in the recent rows."""
    rows = [(float(r[RPS]), float(r[LATENCY])) for r in series if math.isfinite(r[RPS]) and math.isfinite(r[LATENCY])]
    if len(rows) < RECENT + MIN_HISTORY:
        return 0.0
    usual = stats.pearson([r[0] for r in rows[:-RECENT]], [r[1] for r in rows[:-RECENT]])
    recent = stats.pearson([r[0] for r in rows[-RECENT:]], [r[1] for r in rows[-RECENT:]])
    if usual is None or recent is None or abs(usual) < 0.3:
        return 0.0
    return max(0.0, abs(usual) - recent * math.copysign(1.0, usual))
