"""Stored decision rows back into Records, for every backend: a row that is not a record says why."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ..contract import Decision
from . import Record

COLUMNS = "seq, test_id, event_time, received_at, snapshot, decision, prev_hash, hash"
DECISION_FIELDS = frozenset(f.name for f in dataclasses.fields(Decision))
EXCERPT = 60  # characters of a bad column quoted in a report


class Undecodable(ValueError):
    """A row that is not a record; the message says why."""


def decode(row: tuple[Any, ...]) -> Record:
    seq, test_id, event_time, received_at, snapshot_text, decision_text, prev_hash, digest = row
    if not isinstance(event_time, (int, float)) or not isinstance(received_at, (int, float)):
        raise Undecodable(
            f"event_time {event_time!r:.{EXCERPT}} or received_at {received_at!r:.{EXCERPT}} is not a number"
        )
    snapshot = json_object(snapshot_text, "snapshot")
    decision = json_object(decision_text, "decision")
    missing = DECISION_FIELDS - decision.keys()
    if missing:
        raise Undecodable(f"the decision lacks {', '.join(sorted(missing))}")
    return Record(
        int(seq), str(test_id), float(event_time), float(received_at), snapshot, decision, prev_hash or "", digest or ""
    )


def json_object(text: Any, column: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError) as error:
        raise Undecodable(f"the {column} column is not JSON ({error}): {str(text)[:EXCERPT]!r}") from None
    if not isinstance(value, dict):
        raise Undecodable(f"the {column} column is not a JSON object: {str(text)[:EXCERPT]!r}")
    return value
