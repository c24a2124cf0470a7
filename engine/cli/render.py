"""Decisions as people and programs read them: JSON lines and a timeline table."""

from __future__ import annotations

from typing import Any

import orjson

from ..contract import Decision

TABLE_HEADER = ("TIME", "TEST", "ACTION", "SCORE", "LEVEL", "TRAFFIC", "REASON")


def to_json(decision: Decision) -> str:
    return orjson.dumps(decision.to_dict()).decode()


def to_json_dict(decision: dict[str, Any]) -> str:
    return orjson.dumps(decision).decode()


def table_row(decision: Decision | dict[str, Any], width: int = 160) -> str:
    data = decision.to_dict() if isinstance(decision, Decision) else decision
    target = data["target_rollout_percent"]
    traffic = "-" if target is None else f"{target:g}%"
    reason = data["reason"] if len(data["reason"]) <= width else data["reason"][: width - 3] + "..."
    cells = (
        data["timestamp"],
        data["test_id"],
        data["action"],
        f"{data['risk_score']:.2f}",
        data["risk_level"],
        traffic,
        reason,
    )
    return _line(cells)


def table_header() -> str:
    return _line(TABLE_HEADER)


def _line(cells: tuple[str, ...]) -> str:
    widths = (20, 22, 19, 5, 8, 7)
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=False)) + "  " + cells[-1]
