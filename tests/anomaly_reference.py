"""The reference anomaly ensemble, vectorised over a whole series: the oracle the engine's
incremental AnomalyHistory is tested against (tests/test_anomaly.py). Z-score, IQR fences,
EWMA level shift and correlation break, each on the challenger's own history; their
agreement gives a confidence in [0, 1].

Each detector turns its reading r (relative to its cut-off) into a probability
0.6 * clip(r - 0.5, 0, 1): 0.3 at the cut-off, 0.6 at 1.5x and above. The ensemble
confidence is 1 - prod(1 - p): one detector alone never passes 0.6, two strong ones
reach 0.84, so the default 0.8 threshold needs detectors to agree.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine.facts.anomaly import DEFAULT_CUTOFFS, EWMA_ALPHA, FLAT, METRICS, MIN_HISTORY, RECENT, facts_from

LATENCY, RPS = METRICS.index("latency_ms"), METRICS.index("rps")


def detect(series: npt.NDArray[np.float64], cutoffs: dict[str, float]) -> dict[str, float]:
    """Facts for the latest row of `series` (oldest first) against the rows before it.

    Vectorised over the metric columns: this runs on every snapshot.
    """
    cut = {**DEFAULT_CUTOFFS, **cutoffs}
    latest, history = series[-1], series[:-1]
    seen = np.isfinite(history)
    count = seen.sum(axis=0)
    usable = np.isfinite(latest) & (count >= MIN_HISTORY)
    if not usable.any():
        return facts_from(0.0, 0, 0.0, _correlation_break(series), cut)
    filled = np.where(seen, history, 0.0)
    mean = filled.sum(axis=0) / np.maximum(count, 1)
    deviation = np.where(seen, history - mean, 0.0)
    std = np.sqrt((deviation**2).sum(axis=0) / np.maximum(count - 1, 1))
    spread = usable & (std > FLAT * np.maximum(1.0, np.abs(mean)))
    safe_std = np.where(spread, std, 1.0)
    zscore_max = float(np.max(np.where(spread, np.abs(latest - mean) / safe_std, 0.0)))
    level = _ewma_columns(series[-RECENT:], mean)
    level_shift = float(np.max(np.where(spread, np.abs(level - mean) / safe_std, 0.0)))
    ordered = np.sort(np.where(seen, history, np.inf), axis=0)
    q1, q3 = _quantiles(ordered, count, 0.25), _quantiles(ordered, count, 0.75)
    iqr = q3 - q1
    k = cut["iqr_factor"]
    outside = usable & (iqr > 0) & ((latest < q1 - k * iqr) | (latest > q3 + k * iqr))
    return facts_from(zscore_max, int(outside.sum()), level_shift, _correlation_break(series), cut)


def _ewma_columns(rows: npt.NDArray[np.float64], fallback: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """EWMA of each column over `rows`, oldest first; a missing value leaves the level as it was."""
    level = np.where(np.isfinite(rows[0]), rows[0], fallback)
    for row in rows[1:]:
        level = np.where(np.isfinite(row), EWMA_ALPHA * row + (1 - EWMA_ALPHA) * level, level)
    return level


def _quantiles(ordered: npt.NDArray[np.float64], count: npt.NDArray[np.int64], q: float) -> npt.NDArray[np.float64]:
    """Per-column linear quantile of the first `count` sorted values (numpy's default method)."""
    position = q * np.maximum(count - 1, 0)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, np.maximum(count - 1, 0))
    columns = np.arange(ordered.shape[1])
    below, above = ordered[low, columns], ordered[high, columns]
    with np.errstate(invalid="ignore"):  # columns with no values hold inf - inf; masked below
        return np.where(count > 0, below + (above - below) * (position - low), np.nan)


def _correlation_break(series: npt.NDArray[np.float64]) -> float:
    """How much the usual requests/latency correlation weakened in the recent rows."""
    rps, latency = series[:, RPS], series[:, LATENCY]
    both = np.isfinite(rps) & np.isfinite(latency)
    if int(both.sum()) < RECENT + MIN_HISTORY:
        return 0.0
    rps, latency = rps[both], latency[both]
    usual = _pearson(rps[:-RECENT], latency[:-RECENT])
    recent = _pearson(rps[-RECENT:], latency[-RECENT:])
    if usual is None or recent is None or abs(usual) < 0.3:
        return 0.0
    return max(0.0, abs(usual) - recent * math.copysign(1.0, usual))


def _pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float | None:
    dx, dy = x - x.mean(), y - y.mean()
    vx, vy = float(dx @ dx), float(dy @ dy)
    if vx <= FLAT * max(1.0, float(x @ x)) or vy <= FLAT * max(1.0, float(y @ y)):
        return None  # constant up to rounding: no correlation to speak of
    return max(-1.0, min(1.0, float(dx @ dy) / math.sqrt(vx * vy)))
