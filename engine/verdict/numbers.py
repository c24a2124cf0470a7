"""How the verdict writes numbers: scores rounded to six places, observations to three digits."""

from __future__ import annotations


def exact(value: float) -> float:
    """Six decimal places: weights x severities print as the policy's numbers (0.35, not 0.35000000000000003)."""
    return round(value, 6)


def short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def duration(seconds: float) -> str:
    """90 -> '1m30s', 120 -> '2m', 45 -> '45s'."""
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{rest}s"
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"
