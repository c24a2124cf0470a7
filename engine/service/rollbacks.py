"""Carrying out rollbacks: open a record when a rollback is decided (or asked for), do abguard's
own steps through the durable outbox (flag flip, rollback alert), take the gateway's step
reports, raise an alert when a phase misses its deadline, and judge the recovery from the
snapshots that follow.

Nothing here can fail a decision: the decision log is written first and is the source of
truth. A rollback decision whose record is missing (the process died in between) is opened
again by `reconcile` at start, and its outbox items then run as if nothing happened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import Any, Protocol

from ..contract import Decision, Snapshot, parse_snapshot
from ..contract.times import parse_time
from ..integrations.alertmanager import ROLLBACK_ALERT
from ..rollback import recovery
from ..rollback.process import Recovery, Rollback, RollbackError, StepState
from ..store import DecisionLog
from ..store.rollbacks import OutboxItem, RollbackRecords, Work

ALERT_RESEND_SECONDS = 60.0  # firing alerts are re-sent at least this often (Alertmanager's resolve_timeout is 5m)
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)  # seconds before each retry; the last repeats
# outbox kinds that carry out a step of the record; a step is done when all its items are
STEP_OF_KIND = {"flag_rollback": "feature_flags", "rollback_alert": "notification", "rollback_webhook": "notification"}


class FlagSink(Protocol):
    """What the outbox needs of a feature-flag provider."""

    def flag_for(self, test_id: str) -> str: ...

    def roll_back(self, flag: str) -> None: ...

    def set_rollout(self, flag: str, percent: float) -> None: ...


class AlertSink(Protocol):
    """What the outbox needs of Alertmanager: alerts as its API's JSON, and the alerts of a decision."""

    def send(self, alerts: list[dict[str, Any]]) -> None: ...

    def for_decision(self, decision: Decision, active: frozenset[str]) -> tuple[list[dict[str, Any]], frozenset[str]]:
        """Alerts to send (firing and resolved) and the keys active after the decision."""

    def rollback(self, record: Rollback) -> list[dict[str, Any]]: ...

    def overdue(self, record: Rollback, phase: str, now: float) -> list[dict[str, Any]]: ...

    def state_rejected(self, test_id: str, where: str, why: str, now: float) -> list[dict[str, Any]]: ...


class NotifySink(Protocol):
    """What the outbox needs of the signed rollback webhook (engine/integrations/notify.py)."""

    def send(self, event: dict[str, Any]) -> None: ...


class Rollbacks:
    def __init__(
        self,
        store: RollbackRecords,
        clock: Callable[[], float],
        flags: FlagSink | None = None,
        alerts: AlertSink | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        notify: NotifySink | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.flags = flags
        self.alerts = alerts
        self.notify = notify
        self.on_event = on_event
        self._active: dict[str, frozenset[Any]] = {}  # test -> alert keys firing
        self._asked: dict[str, float] = {}  # test -> the challenger share last asked of its flag
        self._alerted_at: dict[str, float] = {}  # test -> when its alerts were last queued
        self._judged: dict[str, str] = {}  # test -> its latest rollback, once its recovery is judged
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # --- what the guard tells -----------------------------------------------------------------
    def decided(self, decision: Decision, snapshot: Snapshot) -> None:
        """After a decision is in the log: alerts, a rollback to open, the flag's rollout, recovery."""
        now = self.clock()
        work: list[Work] = []
        alerts: list[dict[str, Any]] = []
        if self.alerts is not None:
            with self._lock:
                before = self._active.get(decision.test_id, frozenset())
            alerts, after = self.alerts.for_decision(decision, before)
            with self._lock:
                self._active[decision.test_id] = after
                changed = after != before or any(a.get("ends_at") for a in alerts)
                due = now - self._alerted_at.get(decision.test_id, float("-inf")) >= ALERT_RESEND_SECONDS
                if changed or due:
                    self._alerted_at[decision.test_id] = now
                else:  # the same alerts, sent a moment ago: Alertmanager holds them
                    alerts = []
        starts = rolled_back_now(decision)
        # a rollback's own alert is the rollback record's notification step: sent once, not twice
        rollback_alerts = [a for a in alerts if starts and a.get("alertname") == ROLLBACK_ALERT]
        others = [a for a in alerts if a not in rollback_alerts]
        if others:
            work.append(Work("alerts", {"alerts": others}, f"alerts:{decision.decision_id}"))
        if starts:
            self.open(
                decision.decision_id, decision.test_id, decision.timestamp, decision.triggered_by or "rollback",
                decision.reason, "abguard", decision.decision_id, snapshot, now, rollback_alerts,
            )  # fmt: skip
            with self._lock:
                self._asked[decision.test_id] = 0.0
        else:
            target = _new_target(decision, snapshot, self._asked.get(decision.test_id))
            if self.flags is not None and target is not None:
                flag = self.flags.flag_for(decision.test_id)
                work.append(Work("flag_rollout", {"flag": flag, "percent": target}, f"rollout:{decision.decision_id}"))
                with self._lock:
                    self._asked[decision.test_id] = target
            self._judge_recovery(decision.test_id, snapshot, now)
        if work:
            self.store.enqueue(decision.test_id, work, now)

    def open(
        self,
        rollback_id: str,
        test_id: str,
        decided_at: str,
        trigger: str,
        reason: str,
        requested_by: str,
        decision_id: str,
        snapshot: Snapshot | None,
        now: float,
        rollback_alerts: list[dict[str, Any]] | None = None,
    ) -> Rollback:
        """Open a rollback record (once: a second call returns the first) with its outbox work.

        `rollback_alerts`: the decision's own rollback alert (Alertmanager identifies an alert by its
        labels, so the one the later decisions keep firing is this one); a manual rollback has none."""
        found = self.store.get(rollback_id)
        if found is not None:
            return found
        record = Rollback.open(rollback_id, test_id, now, decided_at, trigger, reason, requested_by, decision_id)
        work = []
        if self.flags is not None:
            flag = self.flags.flag_for(test_id)
            work.append(Work("flag_rollback", {"flag": flag}, f"{rollback_id}:flag"))
        else:
            record = record.with_step("feature_flags", StepState.SKIPPED, now, "no flag provider configured")
        if self.alerts is not None:
            alerts = rollback_alerts or self.alerts.rollback(record)
            work.append(Work("rollback_alert", {"alerts": alerts}, f"{rollback_id}:alert"))
            if not rollback_alerts:  # a manual rollback's alert: kept firing by the decisions that repeat it
                parts = ("alertname", "test_id", "condition", "severity")
                keys = {tuple(a[p] for p in parts) for a in alerts if all(p in a for p in parts)}
                with self._lock:
                    self._active[test_id] = self._active.get(test_id, frozenset()) | frozenset(keys)
        if self.notify is not None:
            event = _event_of(record, "rollback_opened", trigger=trigger, reason=reason, requested_by=requested_by)
            work.append(
                Work("rollback_webhook", {"event": {**event, "decided_at": decided_at}}, f"{rollback_id}:webhook")
            )
        if self.alerts is None and self.notify is None:
            record = record.with_step("notification", StepState.SKIPPED, now, "no Alertmanager or webhook configured")
        reference = asdict(recovery.reference(snapshot)) if snapshot is not None else None
        # recovery counts event time from the snapshot the rollback followed (a manual one is asked on the
        # service's clock, which the snapshots' times need not share)
        since = snapshot.timestamp if snapshot is not None else parse_time(decided_at)
        self.store.open(record, work, now, {"reference": reference, "first_pass": None, "since": since})
        with self._lock:
            self._judged.pop(test_id, None)
        self._event({"event": "rollback_opened", "test_id": test_id, "rollback_id": rollback_id, "by": requested_by})
        return self.store.get(rollback_id) or record

    def state_rejected(self, test_id: str, where: str, why: str) -> None:
        """Alert that a stored state of the test was rejected (through the outbox, as every alert)."""
        if self.alerts is None:
            return
        now = self.clock()
        alerts = self.alerts.state_rejected(test_id, where, why, now)
        self.store.enqueue(test_id, [Work("alerts", {"alerts": alerts}, f"state:{test_id}:{where}:{now:.6f}")], now)

    def report(self, test_id: str, rollback_id: str, step: str, outcome: str, detail: str) -> Rollback:
        """A gateway's report of one of its steps; reporting the same outcome again changes nothing."""
        now = self.clock()

        def change(record: Rollback) -> tuple[Rollback, list[Work]]:
            if record.test_id != test_id:
                raise LookupError(f"no rollback {rollback_id!r} of test {test_id!r}")
            return record.reported(step, outcome, now, detail), []

        moved = self.store.update(rollback_id, change, now)
        if moved is None:
            raise LookupError(f"no rollback {rollback_id!r} of test {test_id!r}")
        return moved

    # --- the worker ---------------------------------------------------------------------------
    def start(self, period: float = 0.5) -> None:
        def run() -> None:
            while not self._stop.wait(period):
                try:
                    self.tick()
                except Exception as error:  # the worker outlives any one failure
                    self._event({"event": "rollback_worker_error", "why": f"{type(error).__name__}: {error}"[:300]})

        self._worker = threading.Thread(target=run, name="abguard-rollbacks", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(5)

    def tick(self) -> None:
        """Run what is due in the outbox, and alert on phases past their deadline (once each)."""
        now = self.clock()
        for item in self.store.due(now):
            self._run(item, now)
        if self.alerts is None and self.notify is None:
            return
        for record in self.store.unfinished():
            if _late(record, now):
                self._mark_overdue(record.rollback_id, now)

    def _mark_overdue(self, rollback_id: str, now: float) -> None:
        """Queue the overdue alert of the phases late now, judged on the record as stored (once each)."""
        late: list[str] = []

        def mark(current: Rollback) -> tuple[Rollback, list[Work]]:
            late[:] = _late(current, now)
            marked = replace(current, alerted_overdue=(*current.alerted_overdue, *late))
            return marked, self._overdue(current, late, now)

        self.store.update(rollback_id, mark, now)
        if late:
            self._event({"event": "rollback_overdue", "rollback_id": rollback_id, "phases": late})

    def _overdue(self, record: Rollback, late: list[str], now: float) -> list[Work]:
        """The alert and webhook event of phases past their deadline."""
        if not late:
            return []
        key = f"{record.rollback_id}:overdue:{','.join(late)}"
        work = []
        if self.alerts is not None:
            alerts = [a for phase in late for a in self.alerts.overdue(record, phase, now)]
            work.append(Work("alerts", {"alerts": alerts}, key))
        if self.notify is not None:
            pending = [s.name for s in record.steps if s.spec.phase in late and not s.state.final]
            event = _event_of(record, "rollback_overdue", phases=late, steps_not_done=pending)
            work.append(Work("webhook_event", {"event": event}, f"{key}:webhook"))
        return work

    def _run(self, item: OutboxItem, now: float) -> None:
        try:
            self._perform(item)
        except Exception as error:
            why = f"{type(error).__name__}: {error}"[:300]
            self.store.failed(item.id, why, now + BACKOFF[min(item.attempts, len(BACKOFF) - 1)])
            self._step(item, StepState.FAILED, now, f"attempt {item.attempts + 1} failed, retrying: {why}")
            self._event({"event": "outbox_failed", "kind": item.kind, "test_id": item.test_id, "why": why})
            return
        self.store.finished(item.id, now)
        self._step(item, StepState.DONE, now, f"done by abguard after {item.attempts + 1} attempt(s)")

    def _perform(self, item: OutboxItem) -> None:
        payload = item.payload
        if item.kind in ("flag_rollback", "flag_rollout"):
            if self.flags is None:
                raise RuntimeError("no flag provider configured any more")
            if item.kind == "flag_rollback":
                self.flags.roll_back(payload["flag"])
            else:
                self.flags.set_rollout(payload["flag"], float(payload["percent"]))
        elif item.kind in ("alerts", "rollback_alert"):
            if self.alerts is None:
                raise RuntimeError("no Alertmanager configured any more")
            self.alerts.send(payload["alerts"])
        elif item.kind in ("rollback_webhook", "webhook_event"):
            if self.notify is None:
                raise RuntimeError("no notification webhook configured any more")
            self.notify.send(payload["event"])
        else:
            raise RuntimeError(f"unknown outbox kind {item.kind!r}")

    def _step(self, item: OutboxItem, state: StepState, now: float, detail: str) -> None:
        step = STEP_OF_KIND.get(item.kind)
        if step is None or item.rollback_id is None:
            return
        if state == StepState.DONE:
            same = [i for i in self.store.items(item.rollback_id) if STEP_OF_KIND.get(i.kind) == step]
            waiting = [i.kind for i in same if i.done_at is None]
            if waiting:  # another item of the step (the webhook beside the alert, say) is still to go
                state, detail = StepState.PENDING, f"{item.kind} done; waiting for {', '.join(waiting)}"
        self.store.update(item.rollback_id, lambda record: (record.with_step(step, state, now, detail), []), now)

    # --- recovery -----------------------------------------------------------------------------
    def _judge_recovery(self, test_id: str, snapshot: Snapshot, now: float) -> None:
        if test_id in self._judged:  # (a new rollback of the test forgets it)
            return
        record = self.store.latest(test_id)
        if record is None:
            self._judged[test_id] = ""
            return
        if record.recovery is not None or record.closed:
            self._judged[test_id] = record.rollback_id
            return
        extra = self.store.extra(record.rollback_id)
        if not extra.get("reference"):
            return
        elapsed = snapshot.timestamp - float(extra.get("since") or parse_time(record.decided_at))
        if elapsed <= 0:
            return
        scores = recovery.checks(recovery.Health(**extra["reference"]), recovery.service(snapshot))
        first_pass = extra.get("first_pass")
        if first_pass is None and recovery.passed(scores):
            first_pass = elapsed
            self.store.set_extra(record.rollback_id, {**extra, "first_pass": first_pass})
        if elapsed < recovery.RECOVERY_WINDOW:
            return
        value = recovery.score(scores)
        judged = Recovery(recovery.verdict(value), round(value, 4), now, scores, first_pass)

        def judge(current: Rollback) -> tuple[Rollback, list[Work]]:
            if current.recovery is not None:  # judged already (a resent snapshot, say)
                return current, []
            done = replace(current, recovery=judged)
            work: list[Work] = []
            if judged.status != "successful_recovery" and self.alerts is not None:
                alerts = self.alerts.overdue(done, "recovery", now)
                work.append(Work("alerts", {"alerts": alerts}, f"{current.rollback_id}:partial_recovery"))
            if self.notify is not None:
                event = _event_of(
                    current, "rollback_recovery", status=judged.status, score=judged.score,
                    recovery_seconds=judged.recovery_seconds, checks=judged.checks,
                )  # fmt: skip
                work.append(Work("webhook_event", {"event": event}, f"{current.rollback_id}:recovery:webhook"))
            return done, work

        self.store.update(record.rollback_id, judge, now)
        self._judged[test_id] = record.rollback_id
        self._event({"event": "rollback_recovery", "rollback_id": record.rollback_id, "status": judged.status})

    def restarted(self, test_id: str) -> None:
        """RestartTest: the test's rollback stops where it is; its undone work (a flag flip still being
        retried, late alerts) is cancelled and its recovery is not judged on the test running again."""
        closed = self.store.close_open(test_id, "the test was restarted (RestartTest)", self.clock())
        with self._lock:
            self._judged.pop(test_id, None)
        if closed:
            self._event({"event": "rollback_closed", "test_id": test_id, "rollback_ids": closed})

    # --- after a restart ----------------------------------------------------------------------
    def reconcile(self, log: DecisionLog, tests: list[str] | None = None) -> int:
        """Open the rollback the log decided but no record holds (the process died in between): the
        latest of each test, if no restart came after it and no later record exists. In a store new
        beside an older log, those rollbacks predate the records: they are recorded closed, with no work."""
        opened = 0
        for test_id in tests if tests is not None else log.tests():
            found = log.evidence(test_id)
            if not found:
                continue
            evidence = found[-1]
            rollback_id = str(evidence.get("decision_id", ""))
            if not rollback_id or self.store.get(rollback_id) is not None:
                continue
            decided_at = str(evidence["rollback_timestamp"])
            record = log.find(test_id, parse_time(decided_at))
            restart = log.last_restart(test_id)
            if record is None or (restart is not None and restart.after_seq >= record.seq):
                continue
            latest = self.store.latest(test_id)
            if latest is not None and latest.opened_at >= record.received_at:
                continue
            if record.received_at < self.store.created_at:  # an older data dir, upgraded
                self._record_closed(rollback_id, test_id, decided_at, evidence)
                continue
            self.open(
                rollback_id, test_id, decided_at, str(evidence.get("triggered_by") or "rollback"),
                str(evidence.get("trigger_reason", "")), "abguard", rollback_id, parse_snapshot(record.snapshot),
                self.clock(),
            )  # fmt: skip
            opened += 1
        return opened

    def _record_closed(self, rollback_id: str, test_id: str, decided_at: str, evidence: dict[str, Any]) -> None:
        now = self.clock()
        trigger = str(evidence.get("triggered_by") or "rollback")
        record = Rollback.open(
            rollback_id,
            test_id,
            now,
            decided_at,
            trigger,
            str(evidence.get("trigger_reason", "")),
            "abguard",
            rollback_id,
        )
        why = "decided before this service kept rollback records: nothing was carried out"
        self.store.open(replace(record, closed=why), [], now, {"reference": None, "first_pass": None})

    def _event(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _late(record: Rollback, now: float) -> list[str]:
    """Phases past their deadline, not done, whose overdue alert is not queued yet."""
    return [p.name for p in record.phases(now) if p.state == "overdue" and p.name not in record.alerted_overdue]


def _event_of(record: Rollback, event: str, **fields: Any) -> dict[str, Any]:
    """A rollback event for the signed webhook: what it is about, then its own fields."""
    about = {"test_id": record.test_id, "rollback_id": record.rollback_id, "decision_id": record.decision_id}
    return {"event": event, **about, **fields}


def rolled_back_now(decision: Decision) -> bool:
    """An enforced decision that starts a rollback (not one repeating a rollback already made)."""
    return decision.enforced and decision.action.rolls_back and decision.triggered_by != "rolled_back_test"


def _new_target(decision: Decision, snapshot: Snapshot, asked: float | None) -> float | None:
    """The share to set the flag to, when an enforced decision (short of a rollback) moves it: a new
    target, against the one last asked for (or, before any, the share the gateway reports). A gateway
    slow to follow is not asked again on every decision."""
    target = decision.target_rollout_percent
    if not decision.enforced or target is None or decision.action.rolls_back:
        return None
    current = asked if asked is not None else snapshot.rollout_percent
    return None if target == current else target


def views(records: Iterable[Rollback], now: float) -> list[dict[str, Any]]:
    return [record.to_dict(now) for record in records]


__all__ = ["AlertSink", "FlagSink", "RollbackError", "Rollbacks", "rolled_back_now", "views"]
