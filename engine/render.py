"""Decisions as people and programs read them: JSON lines and a timeline table."""

from __future__ import annotations

import json

from .decision import Decision

TABLE_HEADER = ("TIME", "TEST", "ACTION", "SCORE", "LEVEL", "TRAFFIC", "REASON")


def to_json(decision: Decision) -> str:
    return json.dumps(decision.to_dict(), separators=(",", ":"), allow_nan=False, check_circular=False)


def table_row(decision: Decision, width: int = 160) -> str:
    traffic = "-" if decision.target_rollout_percent is None else f"{decision.target_rollout_percent:g}%"
    reason = decision.reason if len(decision.reason) <= width else decision.reason[: width - 3] + "..."
    cells = (
        decision.timestamp,
        decision.test_id,
        decision.action,
        f"{decision.risk_score:.2f}",
        decision.risk_level,
        traffic,
        reason,
    )
    return _line(cells)


def table_header() -> str:
    return _line(TABLE_HEADER)


def _line(cells: tuple[str, ...]) -> str:
    widths = (20, 22, 19, 5, 8, 7)
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=False)) + "  " + cells[-1]
