"""The service's domain: decide snapshots for many tests, keep the decision log, tell watchers.

Transport-free (the gRPC servicer is a thin layer over this). Calls for different tests run
in parallel; calls for one test are serialised by that test's lock. A decision's next state
is kept only after the log has accepted the decision, so memory never runs ahead of the log.

The guard says whether it is serving (listeners hear each change: the gRPC health status).
It is not while it rebuilds its state from the log (calls raise RebuildingError), nor while
the log cannot be written: the failed write raises LogWriteError, and a probe every
`probe_seconds` tells when writes work again. Both are answered UNAVAILABLE: retry.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from ..contract import Decision, InputError, OutOfOrderError, Snapshot, parse_snapshot, parse_time
from ..contract.times import format_time
from ..pipeline import Engine, TestState, step
from ..policy.model import Policy
from ..rollback.process import Rollback
from ..state import REDIS, StateCodec, StateRejectedError, new_key
from ..store import BadRecord, DecisionLog, LogError, LogWriteError, Record, SharedState
from ..verdict.status import TestHistory
from .evidence import rollback_evidence
from .rebuild import CHECKPOINT_EVERY, Rebuilt, checkpoint, rebuild_test
from .reload import PolicyStatus, Reloader
from .rollbacks import Rollbacks
from .watchers import Watcher, Watchers

if TYPE_CHECKING:
    from ..store.redis_state import RedisStates  # redis is imported only by a service run with --state

MANUAL = "manual_rollback"  # the trigger and rolled_back_by of a rollback asked for by hand
IDLE_SECONDS = 600.0  # a test not evaluated for this long leaves memory (rebuilt on its next call)
SWEEP_SECONDS = 30.0  # how often evaluations look for idle tests

T = TypeVar("T")


class UnknownTestError(LookupError):
    """No decision was ever recorded for this test."""

    def __init__(self, test_id: str) -> None:
        super().__init__(f"test_id: no test {test_id!r} (it has never been evaluated)")
        self.field = "test_id"


class RebuildingError(RuntimeError):
    """The guard is rebuilding its state from the log; the same call will work once it is done."""

    def __init__(self) -> None:
        super().__init__("rebuilding state from the decision log; retry")


@dataclass(frozen=True)
class TestView:
    __test__ = False  # not a pytest class

    test_id: str
    test_status: str
    target_rollout_percent: float | None
    last_decision: dict[str, Any]
    rolled_back_at: str
    decisions: int


class _PolicyGate:
    """Calls run under the policy in force; a swap waits for the calls in flight and holds new ones
    back meanwhile (writer first), so no call sees two policies and none fails for a reload."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def swapping(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._swapping = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


@dataclass
class _Held:
    """A test's state in memory, the log version it reflects (None: this process is the only writer), last use."""

    state: TestState
    version: int | None
    used: float = 0.0
    # the test was restarted: an earlier run may have logged times after this run's last, so every
    # snapshot asks the log whether it is a resend (not only those at or before the state's last time)
    restarted: bool = False


@dataclass(frozen=True)
class _New:
    """A decision appended in the open transaction: told to watchers, rollbacks, metrics once committed."""

    record: Record
    decision: Decision
    snapshot: Snapshot


Outcome = dict[str, Any] | InputError | OutOfOrderError  # one snapshot's answer in a batch


class Guard:
    def __init__(
        self,
        policy: Policy,
        log: DecisionLog,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        probe_seconds: float = 1.0,
        rebuild_first: bool = False,
        rollbacks: Rollbacks | None = None,
        shared: RedisStates | None = None,
        idle_seconds: float = IDLE_SECONDS,
        state_key: bytes | None = None,
    ) -> None:
        """`rebuild_first`: refuse calls (RebuildingError) until `rebuild()` has run (without it, each test's
        state is rebuilt from the log on its first call); `rollbacks` carries out the rollbacks decided
        (without it they are decisions and evidence only); `shared`: the replicas' state cache;
        `state_key` seals the states kept outside the process (without it, the log's own key)."""
        self.policy = policy
        self.rollbacks = rollbacks
        self.engine = Engine.of(policy, remembered=0)  # a resend is answered from the log
        self._gate = _PolicyGate()
        self.reloader: Reloader | None = None  # set by serve when it reloads policies
        self._started_at = format_time(time.time())
        self.log = log
        log.on_bad_record = self._unreadable  # rows the log cannot decode are reported as events
        self.clock = clock
        self.on_event = on_event
        self.shared = shared
        self.idle_seconds = idle_seconds
        self._held: dict[str, _Held] = {}
        self._swept = time.monotonic()
        self._unsaved: dict[str, int] = {}  # decisions since each test's last checkpoint
        self.watchers = Watchers()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.probe_seconds = probe_seconds
        self._health = threading.Lock()  # guards the fields below and the order of notifications
        self._rebuilding = rebuild_first
        self._write_fault: str | None = None  # why the log cannot be written, while it cannot
        self._faults = 0  # write failures so far: a probe only clears the fault it started under
        self._fault_since = 0.0
        self._prober: threading.Thread | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._unopened: set[str] = set()  # tests whose rollback record failed to open (retried on their next decision)
        self._deciders: list[Callable[[dict[str, Any]], None]] = []  # told of each new decision (metrics)
        self._rejections: list[Callable[[str], None]] = []  # told where each stored state not used was (metrics)
        self._state_key = state_key
        self._codec: StateCodec | None = None  # made on first use, under the policy in force then
        if state_key is None:
            with contextlib.suppress(LogError):  # a log that cannot be written now is asked again on first use
                self._state_key = log.state_key(new_key)  # now, outside any transaction of a decision
        self._told: bool | None = None
        self._closing = threading.Event()

    # --- evaluating -------------------------------------------------------------------------
    def evaluate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The decision for one snapshot (JSON-shaped); the recorded one for a resent snapshot."""
        outcome = self.evaluate_many([raw])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def evaluate_many(self, raws: Sequence[dict[str, Any]]) -> list[Outcome]:
        """Each snapshot's decision, or its input error, in order; all in one log transaction (group commit).

        A snapshot that cannot be read, or comes out of order, fails alone; a log or state store that
        cannot be used fails the whole call (LogError: nothing of it was kept, so a retry is safe).
        """
        self._ready()
        with self._gate.reading():
            outcomes = self._evaluate_many(raws)
        self._sweep()
        return outcomes

    def _evaluate_many(self, raws: Sequence[dict[str, Any]]) -> list[Outcome]:
        self.codec  # noqa: B018  # the state key, read (or made) outside the decisions' transaction
        received = self.clock()
        outcomes: list[Outcome | None] = [None] * len(raws)
        parsed: list[tuple[int, dict[str, Any], Snapshot]] = []
        for index, raw in enumerate(raws):
            try:
                parsed.append((index, raw, parse_snapshot(raw)))
            except InputError as error:
                outcomes[index] = error
        tests = sorted({snapshot.test_id for _, _, snapshot in parsed})
        staged: dict[str, _Held] = {}
        new: list[_New] = []
        with self._locks_of(tests):
            if parsed:
                with self._section(tests) as heads:
                    for index, raw, snapshot in parsed:
                        try:
                            outcomes[index] = self._decide(snapshot, raw, received, heads, staged, new)
                        except OutOfOrderError as error:
                            outcomes[index] = error
                    self._share(staged, new)  # before the commit: a state Redis cannot take commits nothing
            self._keep(staged, new)  # only now: the log has them
        return [outcome for outcome in outcomes if outcome is not None]

    def policy_status(self) -> PolicyStatus:
        """The policy deciding now, since when, and what the last reload refused (serve's reloader keeps it)."""
        if self.reloader is not None:
            return self.reloader.status
        return PolicyStatus(self.policy, self._started_at, None)

    def swap_policy(self, policy: Policy) -> None:
        """Decide with `policy` from the next call on (its ruleset is registered first, outside the gate).

        Calls in flight finish under the old one. Every test's state is dropped: the next call of
        each rebuilds it from the log under the new policy, as a restart onto a new policy does."""
        engine = Engine.of(policy, remembered=0)  # a resend is answered from the log
        with self._gate.swapping():
            self.policy, self.engine = policy, engine
            self._codec = None
            self._held.clear()
            self._unsaved.clear()

    def _decide(
        self, snapshot: Snapshot, raw: dict[str, Any], received: float,
        heads: dict[str, int] | None, staged: dict[str, _Held], new: list[_New],
    ) -> dict[str, Any]:  # fmt: skip
        test_id, t = snapshot.test_id, snapshot.timestamp
        held = staged.get(test_id) or self._load(test_id, None if heads is None else heads.get(test_id, 0))
        state = held.state if held is not None else None
        restarted = held is not None and held.restarted
        if state is None or state.last_time is None or t <= state.last_time or restarted:  # maybe a resend
            recorded = self.log.find(test_id, t)
            if recorded is not None:
                return recorded.decision
        state = state or TestState.start(self.policy)
        decision, next_state = step(self.engine, state, snapshot)
        body = decision.to_dict()
        if next_state is state:  # a resend of a recent snapshot
            return body
        evidence = self._evidence(decision, snapshot, raw, received) if _rolled_back_now(decision) else None
        record = self.log.append(raw, body, t, received, evidence)
        staged[test_id] = _Held(next_state, None if heads is None else heads[test_id], restarted=restarted)
        new.append(_New(record, decision, snapshot))
        return body

    def _keep(self, staged: dict[str, _Held], new: list[_New]) -> None:
        """After the commit: keep the states, share them, checkpoint, tell everyone, in each test's order."""
        now = time.monotonic()
        for test_id, held in staged.items():
            held.used = now
            self._held[test_id] = held
        last_seq: dict[str, int] = {}
        for item in new:
            body = item.record.decision
            last_seq[item.decision.test_id] = item.record.seq
            self._unsaved[item.decision.test_id] = self._unsaved.get(item.decision.test_id, 0) + 1
            self.watchers.publish(body)  # under the tests' locks: watchers see a test's decisions in order
            self._carry_out(item.decision, item.snapshot)
            for told in self._deciders:
                told(body)
        for test_id, seq in last_seq.items():
            self._checkpoint(test_id, seq, staged[test_id].state)

    def _share(self, staged: dict[str, _Held], new: list[_New]) -> None:
        """The new states into the shared cache, each with its version and last decision's hash."""
        if self.shared is None or not staged:
            return
        last_hash = {item.decision.test_id: item.record.hash for item in new}
        entries = {}
        codec = self.codec
        for test_id, held in staged.items():
            assert held.version is not None  # a shared state goes with a versioned log
            blob = codec.dump(REDIS, test_id, held.version, held.state, last_hash[test_id])
            entries[test_id] = SharedState(held.version, codec.digest, codec.layout, blob, last_hash[test_id])
        self.shared.put(entries)

    def _load(self, test_id: str, version: int | None, keep: bool = True) -> _Held | None:
        """The test's state as of the log's `version` (None: whatever this process holds is current):
        from memory, else the shared cache, else rebuilt from the log; None for a test the log has not seen.
        A read (`keep` False: GetTest, the dashboard's listing) neither keeps a loaded state in memory nor
        keeps a held one from going idle, so listing 10,000 tests does not bring them all back."""
        held = self._held.get(test_id)
        if held is not None and (version is None or held.version == version):
            if keep:
                held.used = time.monotonic()
            return held
        if version == 0:
            return None
        state = self._shared_state(test_id, version)
        if state is None:
            rebuilt = self._rebuilt(test_id)
            state = rebuilt.state
            if keep:
                self._unsaved[test_id] = rebuilt.replayed
        manual = self._rollback_in_force(test_id)  # a manual rollback is not in the log: its record says so
        if manual is not None and manual.trigger == MANUAL:
            state = _rolled_back_by_hand(state or TestState.start(self.policy), manual)
        if not keep:
            return None if state is None else _Held(state, version, 0.0)
        if state is None:
            self._held.pop(test_id, None)
            return None
        restarted = self.log.last_restart(test_id) is not None
        held = self._held[test_id] = _Held(state, version, time.monotonic(), restarted=restarted)
        return held

    def _shared_state(self, test_id: str, version: int | None) -> TestState | None:
        if self.shared is None or version is None:
            return None
        entry = self.shared.get(test_id)
        if entry is None or entry.version != version:
            return None
        codec = self.codec
        if entry.policy_digest != codec.digest or entry.format != codec.layout:  # another policy's or build's
            return None
        last = self.log.last(test_id)
        if last is None or last.hash != entry.last_hash:  # written for a commit that failed
            return None
        try:
            state = codec.load(REDIS, test_id, version, entry.state, entry.last_hash)
        except StateRejectedError as error:  # costs only a rebuild from the log
            self._rejected(test_id, "redis", error.why)
            return None
        if state.last_time != last.event_time:
            why = f"its last snapshot is at {state.last_time}, the log's at {last.event_time}"
            self._rejected(test_id, "redis", why)
            return None
        return state

    @property
    def codec(self) -> StateCodec:
        """What seals and checks the states kept outside the process, under the policy in force."""
        codec = self._codec
        if codec is None:
            if self._state_key is None:
                self._state_key = self.log.state_key(new_key)  # LogError if the log cannot give it
            codec = self._codec = StateCodec(self.policy, self._state_key)
        return codec

    def _rebuilt(self, test_id: str) -> Rebuilt:
        def rejected(why: str) -> None:
            self._rejected(test_id, "checkpoint", why)

        try:
            codec: StateCodec | None = self.codec
        except LogError:  # no key to read a checkpoint with: the longer replay, from the log alone
            codec = None
        return rebuild_test(self.engine, self.log, test_id, self._skipped(test_id), codec, rejected)

    def on_rejected_state(self, listener: Callable[[str], None]) -> None:
        """Call `listener` with where ("redis", "checkpoint") each stored state that was not used came from."""
        self._rejections.append(listener)

    def _rejected(self, test_id: str, where: str, why: str) -> None:
        """A stored state failed its seal or a check: say so, count it, alert; the test is rebuilt from the log."""
        self._event({"event": "state_rejected", "test_id": test_id, "where": where, "why": why})
        for told in self._rejections:
            told(where)
        if self.rollbacks is not None:
            try:
                self.rollbacks.state_rejected(test_id, where, why)
            except Exception as error:  # the alert is best effort: the rebuild goes on
                self._event({"event": "alert_failed", "test_id": test_id, "why": repr(error)[:300]})

    @contextlib.contextmanager
    def _section(self, tests: Sequence[str]) -> Iterator[dict[str, int] | None]:
        """The log's exclusive transaction for these tests; a failure to use the log or the state store
        stops serving until a probe succeeds."""
        try:
            with self.log.exclusive(tests) as heads:
                yield heads
        except LogWriteError as error:
            self._write_failed(error)
            raise

    @contextlib.contextmanager
    def _locks_of(self, tests: Sequence[str]) -> Iterator[None]:
        """This process's locks of these tests, taken in sorted order (two batches never deadlock)."""
        with contextlib.ExitStack() as stack:
            for test_id in sorted(tests):
                stack.enter_context(self._lock(test_id))
            yield

    @property
    def states(self) -> dict[str, TestState]:
        """The states held in memory now, by test."""
        return {test_id: held.state for test_id, held in self._held.items()}

    def _sweep(self) -> None:
        """Idle tests leave memory: their next call rebuilds them (a checkpoint first makes that short)."""
        now = time.monotonic()
        if now - self._swept < min(SWEEP_SECONDS, self.idle_seconds):
            return
        self._swept = now
        with self._gate.reading():  # a checkpoint names the policy its state was built under
            self._evict_idle(now)

    def _evict_idle(self, now: float) -> None:
        for test_id, held in list(self._held.items()):
            if now - held.used < self.idle_seconds:
                continue
            lock = self._lock(test_id)
            if not lock.acquire(blocking=False):  # in use right now: not idle
                continue
            try:
                if self._held.get(test_id) is not held:
                    continue
                if self._unsaved.get(test_id, 0) and self.shared is None:
                    last = self.log.last(test_id)
                    if last is not None:
                        self.log.save_checkpoint(checkpoint(self.codec, test_id, last.seq, held.state))
                        self._unsaved[test_id] = 0
                del self._held[test_id]
            except LogError as error:  # kept in memory: the next sweep tries again
                self._event({"event": "evict_skipped", "test_id": test_id, "why": str(error)[:300]})
            finally:
                lock.release()

    def on_decision(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener` with each new decision once it is in the log (not with resent ones); it must not raise."""
        self._deciders.append(listener)

    def tests(self) -> list[str]:
        """Every test the log holds a decision of."""
        self._ready()
        return self.log.tests()

    def _carry_out(self, decision: Decision, snapshot: Snapshot) -> None:
        """Rollbacks, alerts and flags after a decision is in the log; their failure never fails it
        (a rollback whose record could not be written is opened again at the next start)."""
        if self.rollbacks is None:
            return
        try:
            if decision.test_id in self._unopened:  # its rollback's record could not be written: try again
                self.rollbacks.reconcile(self.log, [decision.test_id])
                self._unopened.discard(decision.test_id)
            self.rollbacks.decided(decision, snapshot)
        except Exception as error:
            if _rolled_back_now(decision) or decision.test_id in self._unopened:
                self._unopened.add(decision.test_id)
            self._event({"event": "rollback_bookkeeping_failed", "test_id": decision.test_id, "why": repr(error)[:300]})

    def _checkpoint(self, test_id: str, seq: int, state: TestState) -> None:
        """Every CHECKPOINT_EVERY decisions, the test's state: a restart then replays only what followed.

        A checkpoint is an optimisation and exactness beyond the longest window; failing to write
        one never fails the decision (it is logged, and the next decision tries again).
        """
        if self._unsaved.get(test_id, 0) < CHECKPOINT_EVERY:
            return
        try:
            self.log.save_checkpoint(checkpoint(self.codec, test_id, seq, state))
        except Exception as error:
            self._event({"event": "checkpoint_skipped", "test_id": test_id, "why": str(error)[:300]})
            return
        self._unsaved[test_id] = 0

    def _evidence(self, decision: Decision, snapshot: Snapshot, raw: dict[str, Any], received: float) -> dict[str, Any]:
        history = self.log.page(decision.test_id, 200, None)
        lag = received - parse_time(decision.timestamp)
        return rollback_evidence(decision, snapshot, raw, [r.decision for r in history], lag)

    # --- reading ----------------------------------------------------------------------------
    def test(self, test_id: str) -> TestView:
        self._ready()
        record = self.log.last(test_id)
        if record is None:
            raise UnknownTestError(test_id)
        restart = self.log.last_restart(test_id)
        restarted = restart is not None and restart.after_seq >= record.seq
        with self._gate.reading(), self._lock(test_id):
            held = self._load(test_id, self.log.version(test_id), keep=False)
        state = held.state if held is not None else None
        rolled_back_at = state.history.rolled_back_at if state and not restarted else None
        if restarted:
            test_status, target = "running", record.snapshot.get("rollout_percent")
        else:
            test_status, target = record.decision["test_status"], record.decision["target_rollout_percent"]
            if state is not None and state.history.rolled_back_by == MANUAL:
                test_status, target = "rolled_back", 0.0
            ongoing = self._rollback_in_force(test_id)
            if test_status == "rolled_back" and ongoing is not None and not ongoing.complete():
                test_status = "rollback_in_progress"
        return TestView(
            test_id=test_id,
            test_status=test_status,
            target_rollout_percent=target,
            last_decision=record.decision,
            rolled_back_at=rolled_back_at or "",
            decisions=self.log.count(test_id),
        )

    # --- rollbacks ----------------------------------------------------------------------------
    def rollback(self, test_id: str, reason: str, requested_by: str) -> Rollback:
        """Roll a test back by hand: its next decisions are `rollback`, through the same process."""
        self._ready()
        rollbacks = self._rollbacks()
        # one transaction of the log for the test: no replica decides it between the record and the version bump
        with self._gate.reading(), self._lock(test_id), self._section([test_id]) as heads:
            last = self.log.last(test_id)
            if last is None:
                raise UnknownTestError(test_id)
            held = self._load(test_id, None if heads is None else heads.get(test_id, 0))
            state = held.state if held is not None else TestState.start(self.policy)
            ongoing = self._rollback_in_force(test_id)
            if state.history.rolled_back_at is not None and ongoing is not None:
                return ongoing  # already rolled back: asking again changes nothing
            now = self.clock()
            record = rollbacks.open(
                f"manual-{test_id}-{int(now * 1000)}", test_id, format_time(now), MANUAL,
                reason, requested_by, last.decision["decision_id"], parse_snapshot(last.snapshot), now,
            )  # fmt: skip
            self.log.touch(test_id)  # the other replicas load the test again, and find the record
            version = None if heads is None else heads[test_id]
            restarted = held is not None and held.restarted
            self._held[test_id] = _Held(
                _rolled_back_by_hand(state, record), version, time.monotonic(), restarted=restarted
            )
        return record

    def get_rollback(self, test_id: str, rollback_id: str) -> Rollback:
        self._ready()
        rollbacks = self._rollbacks()
        record = rollbacks.store.get(rollback_id) if rollback_id else rollbacks.store.latest(test_id)
        if record is None or record.test_id != test_id:
            raise UnknownRollbackError(test_id, rollback_id)
        return record

    def list_rollbacks(self, test_id: str, limit: int) -> list[Rollback]:
        self._ready()
        return self._rollbacks().store.listed(test_id or None, limit)

    def report_step(self, test_id: str, rollback_id: str, step: str, outcome: str, detail: str) -> Rollback:
        self._ready()
        try:
            return self._rollbacks().report(test_id, rollback_id, step, outcome, detail)
        except LookupError:
            raise UnknownRollbackError(test_id, rollback_id) from None

    def _rollbacks(self) -> Rollbacks:
        if self.rollbacks is None:
            raise RollbacksUnavailableError("this service keeps no rollback records (it was started without them)")
        return self.rollbacks

    def rollback_in_progress(self, test_id: str) -> bool:
        """Whether the test's rollback (not undone by a restart) still has steps to do."""
        record = self._rollback_in_force(test_id)
        return record is not None and not record.complete()

    def _rollback_in_force(self, test_id: str) -> Rollback | None:
        """The test's latest rollback, unless a restart came after it."""
        if self.rollbacks is None:
            return None
        record = self.rollbacks.store.latest(test_id)
        restart = self.log.last_restart(test_id)
        if record is None or (restart is not None and restart.at >= record.opened_at):
            return None
        return record

    def now(self) -> float:
        return self.clock()

    def decisions(self, test_id: str, limit: int, before_seq: int | None) -> list[Record]:
        self._ready()
        if self.log.last(test_id) is None:
            raise UnknownTestError(test_id)
        return self.log.page(test_id, limit, before_seq)

    def restart(self, test_id: str, reason: str) -> float:
        self._ready()
        with self._gate.reading(), self._lock(test_id):
            if self.log.last(test_id) is None:
                raise UnknownTestError(test_id)
            at = self.clock()
            self._write(lambda: self.log.restart(test_id, reason, at))
            if self.log.version(test_id) is None:  # this process is the only writer: the new run starts empty
                self._held[test_id] = _Held(TestState.start(self.policy), None, time.monotonic(), restarted=True)
            else:  # another replica may decide the new run's first snapshot before we look: load it then
                self._held.pop(test_id, None)
            self._unsaved.pop(test_id, None)
            self._unopened.discard(test_id)
            if self.rollbacks is not None:
                try:
                    self.rollbacks.restarted(test_id)
                except Exception as error:  # the restart is logged; a record left open is closed at no cost later
                    self._event({"event": "rollback_bookkeeping_failed", "test_id": test_id, "why": repr(error)[:300]})
        return at

    # --- watching ---------------------------------------------------------------------------
    def watch(self, test_ids: frozenset[str], actions: frozenset[str]) -> Watcher:
        return self.watchers.open(test_ids, actions)

    def stream(self, watcher: Watcher, alive: Callable[[], bool], poll: float = 0.5) -> Iterator[dict[str, Any]]:
        return self.watchers.stream(watcher, alive, poll)

    def end_watches(self) -> None:
        self.watchers.end_all()

    def close(self) -> None:
        """Stop probing, end watch streams, close the log; a failed checkpoint is reported, not raised."""
        self._closing.set()
        prober = self._prober
        if prober is not None:
            prober.join(self.probe_seconds + 5)
        self.end_watches()
        if self.shared is not None:
            self.shared.close()
        try:
            self.log.close()
        except LogError as error:  # the log's -wal file still holds every decision
            self._event({"event": "checkpoint_failed", "why": str(error)})

    # --- health -----------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        """Whether calls can be answered now: the state is rebuilt and the log can be written."""
        return not self._rebuilding and self._write_fault is None

    def _ready(self) -> None:
        if self._rebuilding:
            raise RebuildingError

    def on_serving(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(serving)` now and on every change (the gRPC health status follows it)."""
        with self._health:
            self._listeners.append(listener)
            listener(self.serving)

    def check_log(self) -> bool:
        """Try a write now (and the shared state); if it fails the guard stops serving until a probe succeeds."""
        if self._closing.is_set():  # the log is closed or closing: nothing to learn
            return False
        try:
            self._write(self._probe_once)
        except LogWriteError:
            return False
        return True

    def _write(self, write: Callable[[], T]) -> T:
        try:
            return write()
        except LogWriteError as error:
            self._write_failed(error)
            raise

    def _write_failed(self, error: LogWriteError) -> None:
        with self._health:
            self._faults += 1
            if self._write_fault is None:
                self._fault_since = time.monotonic()
                self._event({"event": "log_unwritable", "why": str(error)})
            self._write_fault = str(error)
            if self._prober is None and not self._closing.is_set():
                self._prober = threading.Thread(target=self._probe, name="abguard-log-probe", daemon=True)
                self._prober.start()
            self._tell()

    def _probe(self) -> None:
        """Every probe_seconds, a write that leaves nothing behind; serving again once one works."""
        while not self._closing.wait(self.probe_seconds):
            faults = self._faults
            try:
                self._probe_once()
            except LogError as error:
                with self._health:
                    self._write_fault = str(error)  # the latest reason
                continue
            except Exception as error:  # a bug of ours: keep probing, say so
                self._event({"event": "internal_error", "method": "probe", "error": repr(error)[:1000]})
                continue
            with self._health:
                if faults != self._faults:  # a write failed while this probe ran: probe again
                    continue
                self._write_fault = None
                self._prober = None
                self._event({"event": "log_writable", "after_seconds": round(time.monotonic() - self._fault_since, 3)})
                self._tell()
                return
        with self._health:
            self._prober = None

    def _probe_once(self) -> None:
        self.log.probe()
        if self.shared is not None:
            self.shared.probe()

    def _tell(self) -> None:
        """Tell listeners the serving state if it changed (called under the health lock)."""
        serving = self.serving
        if serving != self._told:
            self._told = serving
            for listener in self._listeners:
                listener(serving)

    def _event(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    # --- restoring --------------------------------------------------------------------------
    def warm(self) -> int:
        """At start: reopen the rollbacks the log decided whose records are missing; how many.

        Nothing else waits: each test's state is loaded on its first call (memory, the shared
        state, or its checkpoint and what followed), so a restart serves at once whatever the log's size.
        """
        if self.rollbacks is None:
            return 0
        opened = self.rollbacks.reconcile(self.log)
        if opened:
            self._event({"event": "rollbacks_reopened", "count": opened})
        return opened

    def rebuild(self) -> int:
        """Every test's state from the log; the number of snapshots replayed.

        Calls are refused (RebuildingError) while it runs, and until it succeeds; close() stops it.
        """
        with self._health:
            self._rebuilding = True
            self._tell()
        replayed = 0
        for test_id in self.log.tests():
            if self._closing.is_set():
                return replayed
            with self._gate.reading(), self._lock(test_id):
                rebuilt = self._rebuilt(test_id)
                state = rebuilt.state
                manual = self._rollback_in_force(test_id)
                if manual is not None and manual.trigger == MANUAL:
                    state = _rolled_back_by_hand(state or TestState.start(self.policy), manual)
                if state is None:
                    self._held.pop(test_id, None)
                else:
                    restarted = self.log.last_restart(test_id) is not None
                    self._held[test_id] = _Held(state, self.log.version(test_id), time.monotonic(), restarted=restarted)
                self._unsaved[test_id] = rebuilt.replayed
                replayed += rebuilt.replayed
        if self._closing.is_set():
            return replayed
        if self.rollbacks is not None:
            opened = self.rollbacks.reconcile(self.log)
            if opened:
                self._event({"event": "rollbacks_reopened", "count": opened})
        with self._health:
            self._rebuilding = False
            self._tell()
        return replayed

    def _skipped(self, test_id: str) -> Callable[[int, str], None]:
        def report(seq: int, why: str) -> None:
            if self.on_event is not None:
                self.on_event({"event": "rebuild_skipped_record", "seq": seq, "test_id": test_id, "why": why})

        return report

    def _unreadable(self, record: BadRecord) -> None:
        if self.on_event is not None:
            self.on_event(
                {"event": "unreadable_record", "seq": record.seq, "test_id": record.test_id, "why": record.why}
            )

    def _lock(self, test_id: str) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(test_id)
            if lock is None:
                lock = self._locks[test_id] = threading.Lock()
            return lock


def _rolled_back_by_hand(state: TestState, record: Rollback) -> TestState:
    if state.history.rolled_back_at is not None:
        return state
    return replace(state, history=TestHistory(record.decided_at, MANUAL, state.history.reduced))


class RollbacksUnavailableError(RuntimeError):
    """Rollback calls on a guard built without a rollback store."""


class UnknownRollbackError(LookupError):
    def __init__(self, test_id: str, rollback_id: str) -> None:
        which = f"rollback {rollback_id!r}" if rollback_id else "any rollback"
        super().__init__(f"test {test_id!r} has no {which}")


def _rolled_back_now(decision: Decision) -> bool:
    return decision.enforced and decision.action.rolls_back and decision.triggered_by != "rolled_back_test"
