"""Durations as policy authors write them: `500ms`, `30s`, `10m`, `24h`, `7d`."""

from __future__ import annotations

import re

_PATTERN = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: object) -> float:
    """Seconds in `text`; ValueError says what a duration looks like."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration: write a number and one unit of ms, s, m, h, d (e.g. 30s, 10m)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def format_seconds(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _SECONDS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"
