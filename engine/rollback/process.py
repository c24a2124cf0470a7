"""A rollback as a tracked process: the spec's three phases, their steps and deadlines, who
performs each step, and the pure transitions of a rollback record.

    immediate        0-30 s   traffic_cutoff*, assignment_freeze*, cache_invalidation*, status_update
    safe_transition 30-60 s   champion_restoration*, feature_flags, database_updates, notification
    cleanup         60-120 s  cache_tiers*, connection_pools*, metrics_reset*, audit

Steps marked * only the gateway can perform: it acknowledges them with ReportRollbackStep.
abguard performs the others itself (flags and alerts through the durable outbox). Deadlines
count from the moment the rollback opened, on the service's clock. A phase is `complete`
when all its steps are done or skipped, `overdue` when its deadline passed first; the
rollback is complete when every phase is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ..contract.times import format_time


class Owner(StrEnum):
    ABGUARD = "abguard"
    GATEWAY = "gateway"


class StepState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # tried and failed; abguard retries its own steps, the gateway reports again
    SKIPPED = "skipped"  # nothing to do here (no flag provider configured, say): counts as complete

    @property
    def final(self) -> bool:
        return self in (StepState.DONE, StepState.SKIPPED)


@dataclass(frozen=True, slots=True)
class StepSpec:
    name: str
    phase: str
    owner: Owner
    description: str


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    name: str
    deadline_seconds: float


PHASES = (PhaseSpec("immediate", 30.0), PhaseSpec("safe_transition", 60.0), PhaseSpec("cleanup", 120.0))
STEPS = (
    StepSpec("traffic_cutoff", "immediate", Owner.GATEWAY, "challenger traffic to 0%"),
    StepSpec("assignment_freeze", "immediate", Owner.GATEWAY, "no new challenger assignments"),
    StepSpec("cache_invalidation", "immediate", Owner.GATEWAY, "challenger-specific caches cleared"),
    StepSpec("status_update", "immediate", Owner.ABGUARD, "test marked rollback_in_progress"),
    StepSpec("champion_restoration", "safe_transition", Owner.GATEWAY, "all traffic routed to the champion"),
    StepSpec("feature_flags", "safe_transition", Owner.ABGUARD, "challenger feature flag rolled back"),
    StepSpec("database_updates", "safe_transition", Owner.ABGUARD, "rollback record stored"),
    StepSpec("notification", "safe_transition", Owner.ABGUARD, "rollback alert sent to Alertmanager"),
    StepSpec("cache_tiers", "cleanup", Owner.GATEWAY, "all cache tiers cleared of challenger entries"),
    StepSpec("connection_pools", "cleanup", Owner.GATEWAY, "connection pools reset if needed"),
    StepSpec("metrics_reset", "cleanup", Owner.GATEWAY, "challenger performance metrics cleared"),
    StepSpec("audit", "cleanup", Owner.ABGUARD, "rollback event in the hash-chained decision log"),
)
STEP_SPECS = {step.name: step for step in STEPS}
GATEWAY_STEPS = frozenset(step.name for step in STEPS if step.owner == Owner.GATEWAY)


class RollbackError(ValueError):
    """A report that does not fit the rollback (unknown step, or a step abguard performs itself)."""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    state: StepState = StepState.PENDING
    at: float | None = None  # when it reached its state (service clock)
    detail: str = ""
    attempts: int = 0

    @property
    def spec(self) -> StepSpec:
        return STEP_SPECS[self.name]


@dataclass(frozen=True, slots=True)
class Recovery:
    """How the service recovered after the rollback, judged from the snapshots that followed."""

    status: str  # successful_recovery | partial_recovery
    score: float
    at: float
    checks: dict[str, float]  # check -> its score in [0, 1]
    recovery_seconds: float | None  # from the rollback to the first snapshot at which all checks passed


@dataclass(frozen=True, slots=True)
class Rollback:
    """One rollback of one test, as recorded."""

    rollback_id: str
    test_id: str
    opened_at: float  # service clock
    decided_at: str  # the decision's (event-time) timestamp
    trigger: str  # triggered_by of the decision, or "manual_rollback"
    reason: str
    requested_by: str  # "abguard" for an automatic rollback, the caller's identity for a manual one
    decision_id: str
    steps: tuple[Step, ...]
    alerted_overdue: tuple[str, ...] = ()  # phases whose overdue alert was queued
    recovery: Recovery | None = None
    closed: str = ""  # why the record stopped before it completed (RestartTest, or decided before records existed)

    @classmethod
    def open(
        cls,
        rollback_id: str,
        test_id: str,
        opened_at: float,
        decided_at: str,
        trigger: str,
        reason: str,
        requested_by: str,
        decision_id: str,
    ) -> Rollback:
        steps = tuple(Step(spec.name) for spec in STEPS)
        record = cls(rollback_id, test_id, opened_at, decided_at, trigger, reason, requested_by, decision_id, steps)
        # what holds the moment the record is stored: the decision says rolled back, the record exists,
        # and the decision is in the hash-chained log
        for name in ("status_update", "database_updates"):
            record = record.with_step(name, StepState.DONE, opened_at, "recorded by abguard")
        audit = (
            "the rollback decision is in the hash-chained decision log"
            if trigger != "manual_rollback"
            else "asked for by hand: in the rollback records with who asked (audit export), not in the chained log"
        )
        return record.with_step("audit", StepState.DONE, opened_at, audit)

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise RollbackError(f"unknown step {name!r}; steps: {', '.join(s.name for s in STEPS)}")

    def with_step(self, name: str, state: StepState, at: float, detail: str = "") -> Rollback:
        """The record with one step moved; a final step stays final (reports are idempotent)."""
        current = self.step(name)
        if current.state.final or (current.state == state and current.detail == detail):
            return self
        attempts = current.attempts + (1 if state in (StepState.DONE, StepState.FAILED) else 0)
        moved = Step(name, state, at, detail[:500], attempts)
        return replace(self, steps=tuple(moved if s.name == name else s for s in self.steps))

    def reported(self, name: str, outcome: str, at: float, detail: str = "") -> Rollback:
        """A gateway's report of one of its steps."""
        if name not in STEP_SPECS:
            raise RollbackError(f"unknown step {name!r}; the gateway reports: {', '.join(sorted(GATEWAY_STEPS))}")
        if name not in GATEWAY_STEPS:
            raise RollbackError(f"step {name!r} is performed by abguard, not reported by the gateway")
        try:
            state = StepState(outcome)
        except ValueError:
            raise RollbackError(f"outcome {outcome!r} is not one of done, failed, skipped") from None
        if state == StepState.PENDING:
            raise RollbackError("outcome 'pending' is not a report")
        return self.with_step(name, state, at, detail)

    def phases(self, now: float) -> list[PhaseView]:
        views = []
        for phase in PHASES:
            steps = [s for s in self.steps if s.spec.phase == phase.name]
            deadline = self.opened_at + phase.deadline_seconds
            done_at = max((s.at or 0.0) for s in steps) if all(s.state.final for s in steps) else None
            if done_at is not None:
                state = "complete" if done_at <= deadline else "complete_late"
            else:
                state = "overdue" if now > deadline else "in_progress"
            views.append(PhaseView(phase.name, deadline, state, done_at))
        return views

    def complete(self) -> bool:
        return all(step.state.final for step in self.steps)

    def status(self, now: float) -> str:
        """in_progress, overdue (a phase missed its deadline and is not done), complete, or closed."""
        if self.complete():
            return "complete"
        if self.closed:
            return "closed"
        return "overdue" if any(p.state == "overdue" for p in self.phases(now)) else "in_progress"

    def to_dict(self, now: float) -> dict[str, Any]:
        """The record as the API shows it: times in RFC 3339."""
        return {
            "rollback_id": self.rollback_id,
            "test_id": self.test_id,
            "status": self.status(now),
            "opened_at": _time(self.opened_at),
            "decided_at": self.decided_at,
            "trigger": self.trigger,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "decision_id": self.decision_id,
            "closed": self.closed,
            "phases": [view.to_dict() for view in self.phases(now)],
            "steps": [
                {
                    "name": s.name,
                    "phase": s.spec.phase,
                    "owner": str(s.spec.owner),
                    "state": str(s.state),
                    "at": _time(s.at),
                    "detail": s.detail,
                    "attempts": s.attempts,
                }
                for s in self.steps
            ],
            "recovery": None
            if self.recovery is None
            else {
                "status": self.recovery.status,
                "score": self.recovery.score,
                "at": _time(self.recovery.at),
                "checks": [{"name": name, "score": value} for name, value in self.recovery.checks.items()],
                "recovery_seconds": self.recovery.recovery_seconds,
            },
        }


@dataclass(frozen=True, slots=True)
class PhaseView:
    name: str
    deadline: float
    state: str  # in_progress | overdue | complete | complete_late
    done_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "deadline": _time(self.deadline),
            "state": self.state,
            "done_at": _time(self.done_at),
        }


def _time(at: float | None) -> str:
    """Service-clock times to the millisecond: a person reads them, and microseconds say nothing."""
    return format_time(round(at, 3)) if at is not None else ""
