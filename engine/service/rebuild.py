"""A test's state from the decision log alone, so a restarted service loses nothing.

The snapshots of the test's current run are replayed through the same pure step (only as
far back as the longest window), then the status is taken from what was recorded: a test
rolled back under an earlier policy stays rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..contract import parse_snapshot
from ..facts import horizon
from ..pipeline import Engine, TestState, step
from ..store import DecisionLog
from ..verdict import TestHistory


@dataclass
class Rebuilt:
    state: TestState | None
    replayed: int = 0
    skipped: list[str] = field(default_factory=list)  # "seq N: why" for records that could not be replayed


def rebuild_test(
    engine: Engine, log: DecisionLog, test_id: str, on_skip: Callable[[int, str], None] | None = None
) -> Rebuilt:
    """The test's state from its logged snapshots; `on_skip(seq, why)` hears of each record left out."""
    last = log.last(test_id)
    restart = log.last_restart(test_id)
    if last is None or (restart is not None and restart.after_seq >= last.seq):
        return Rebuilt(None)
    out = Rebuilt(TestState.start(engine.policy))
    history = TestHistory()
    reach = last.event_time - horizon(engine.policy) - 1
    for record in log.since_restart(test_id, 0.0):
        try:
            history = history.after_record(record.decision)
            if record.event_time < reach:
                continue
            assert out.state is not None
            _, out.state = step(engine, out.state, parse_snapshot(record.snapshot))
            out.replayed += 1
        except Exception as error:  # a malformed row is reported and left out; the rest still counts
            why = f"{type(error).__name__}: {str(error)[:200]}"
            out.skipped.append(f"seq {record.seq}: {why}")
            if on_skip is not None:
                on_skip(record.seq, why)
    if out.state is not None:
        out.state = replace(out.state, history=history)
    return out
