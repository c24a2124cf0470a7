"""A test's state from the decision log alone, so a restarted service loses nothing.

From a checkpoint when there is a usable one: the state the live service had right after
a logged decision (same policy digest, same state format), then the decisions logged since,
replayed through the same pure step. The result is exactly the live state, however long the
test has run, in a replay of at most CHECKPOINT_EVERY snapshots.

Otherwise (no checkpoint, another policy, another format, an unreadable one) the snapshots
of the test's current run are replayed as far back as the longest window, then the status
is taken from what was recorded: a test rolled back under an earlier policy stays rolled back.
What outlives the longest window (how long an indicator has held, a traffic cut's episode)
then restarts at the first replayed snapshot.

A checkpoint is data, never code (engine/state): sealed with the state key and checked value by
value. One that was written for another policy or layout is passed over; one that claims to be
current and fails its seal or a check is rejected (`on_rejected` hears why) and costs the longer
replay, never a different decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..contract import parse_snapshot
from ..facts import horizon
from ..pipeline import Engine, TestState, step
from ..state import CHECKPOINT, StateCodec, StateRejectedError
from ..store import Checkpoint, DecisionLog, Record
from ..verdict import TestHistory

CHECKPOINT_EVERY = 120  # decisions between a test's checkpoints: an hour of 30 s snapshots


@dataclass
class Rebuilt:
    state: TestState | None
    replayed: int = 0
    skipped: list[str] = field(default_factory=list)  # "seq N: why" for records that could not be replayed
    from_checkpoint: bool = False


def checkpoint(codec: StateCodec, test_id: str, seq: int, state: TestState) -> Checkpoint:
    """The state right after decision `seq`, sealed and ready to be stored."""
    return Checkpoint(test_id, seq, codec.digest, codec.layout, codec.dump(CHECKPOINT, test_id, seq, state))


def rebuild_test(
    engine: Engine,
    log: DecisionLog,
    test_id: str,
    on_skip: Callable[[int, str], None] | None = None,
    codec: StateCodec | None = None,
    on_rejected: Callable[[str], None] | None = None,
) -> Rebuilt:
    """The test's state from its logged snapshots; `on_skip(seq, why)` hears of each record left out,
    `on_rejected(why)` of a checkpoint that was not used. Without a codec no checkpoint is read."""
    last = log.last(test_id)
    restart = log.last_restart(test_id)
    if last is None or (restart is not None and restart.after_seq >= last.seq):
        return Rebuilt(None)
    floor = restart.after_seq if restart is not None else 0
    resumed = None if codec is None else _resume(codec, log, test_id, floor, last.seq, on_rejected)
    if resumed is not None:
        seq, state = resumed
        records = log.after(test_id, seq - 1)  # the checkpoint's own decision, then what followed
        if records and records[0].seq == seq and records[0].event_time == state.last_time:
            return _replay(engine, records[1:], Rebuilt(state, from_checkpoint=True), on_skip)
        if on_rejected is not None:
            on_rejected(f"its last snapshot ({state.last_time}) is not that of the decision it names (seq {seq})")
    out = Rebuilt(TestState.start(engine.policy))
    history, usable = TestHistory(), []
    reach = last.event_time - horizon(engine.policy) - 1
    for record in log.since_restart(test_id, 0.0):
        try:
            history = history.after_record(record.decision)
        except Exception as error:
            _skip(out, record, error, on_skip)
            continue
        if record.event_time >= reach:
            usable.append(record)
    out = _replay(engine, usable, out, on_skip)
    if out.state is not None:
        out.state = replace(out.state, history=history)
    return out


def _resume(
    codec: StateCodec, log: DecisionLog, test_id: str, floor: int, last: int, on_rejected: Callable[[str], None] | None
) -> tuple[int, TestState] | None:
    """(seq, state) of a checkpoint of the current run that this codec's policy can continue from."""
    found = log.checkpoint(test_id)
    if found is None or not floor < found.seq <= last:
        return None
    if found.policy_digest != codec.digest or found.format != codec.layout:  # another policy's or build's
        return None
    try:
        return found.seq, codec.load(CHECKPOINT, test_id, found.seq, found.state)
    except StateRejectedError as error:  # only costs the longer replay
        if on_rejected is not None:
            on_rejected(error.why)
        return None


def _replay(engine: Engine, records: list[Record], out: Rebuilt, on_skip: Callable[[int, str], None] | None) -> Rebuilt:
    for record in records:
        try:
            assert out.state is not None
            _, out.state = step(engine, out.state, parse_snapshot(record.snapshot))
            out.replayed += 1
        except Exception as error:
            _skip(out, record, error, on_skip)
    return out


def _skip(out: Rebuilt, record: Record, error: Exception, on_skip: Callable[[int, str], None] | None) -> None:
    """A malformed row is reported and left out; the rest still counts."""
    why = f"{type(error).__name__}: {str(error)[:200]}"
    out.skipped.append(f"seq {record.seq}: {why}")
    if on_skip is not None:
        on_skip(record.seq, why)
