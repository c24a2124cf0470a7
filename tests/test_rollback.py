"""A rollback as a tracked process: the record, its phases and deadlines, abguard's own steps
through the durable outbox (retried, surviving a restart), the gateway's reports, recovery
validation, manual rollbacks, and the RPCs."""

from __future__ import annotations

import csv
import http.server
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import grpc
import pytest
from google.protobuf import json_format

from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.contract import Decision
from engine.integrations.alertmanager import Alert
from engine.integrations.flags import verify_signature
from engine.integrations.notify import NotificationError, RollbackWebhook
from engine.policy import load_effective
from engine.rollback.process import GATEWAY_STEPS, Rollback, RollbackError, StepState
from engine.service import Guard, Rollbacks, UnknownRollbackError
from engine.service.sinks import Alerts
from engine.store.postgres_rollbacks import PostgresRollbackStore
from engine.store.rollbacks import RollbackRecords, RollbackStore, Work
from engine.store.sqlite import SqliteLog
from tests.support.shared import postgres_schema

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])


def scenario(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeFlags:
    """A flag provider that fails its first `failures` calls, then records what it was asked."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str, float | None]] = []

    def flag_for(self, test_id: str) -> str:
        return f"ff.challenger_{test_id}"

    def roll_back(self, flag: str) -> None:
        self._call("roll_back", flag, None)

    def set_rollout(self, flag: str, percent: float) -> None:
        self._call("set_rollout", flag, percent)

    def _call(self, what: str, flag: str, percent: float | None) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionRefusedError("provider down")
        self.calls.append((what, flag, percent))


class FakeAlerts:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, alerts: list[dict[str, Any]]) -> None:
        self.sent.extend(alerts)

    def for_decision(self, decision: Decision, active: frozenset[Any]) -> tuple[list[dict[str, Any]], frozenset[Any]]:
        return [], active

    def rollback(self, record: Rollback) -> list[dict[str, Any]]:
        return [{"alertname": "AbguardRollback", "test_id": record.test_id, "by": record.requested_by}]

    def overdue(self, record: Rollback, phase: str, now: float) -> list[dict[str, Any]]:
        return [{"alertname": "AbguardRollbackOverdue", "test_id": record.test_id, "phase": phase}]

    def state_rejected(self, test_id: str, where: str, why: str, now: float) -> list[dict[str, Any]]:
        return [{"alertname": "AbguardStateRejected", "test_id": test_id, "where": where}]


class Setup:
    def __init__(
        self,
        data: Path,
        flags: FakeFlags | None = None,
        alerts: FakeAlerts | None = None,
        store: RollbackRecords | None = None,
    ) -> None:
        self.clock = Clock()
        self.flags = flags if flags is not None else FakeFlags()
        self.alerts = alerts if alerts is not None else FakeAlerts()
        self.store = store if store is not None else RollbackStore(data / "rollbacks.sqlite3")
        self.rollbacks = Rollbacks(self.store, self.clock, self.flags, self.alerts)
        self.guard = Guard(POLICY, SqliteLog.in_dir(data), clock=self.clock, rollbacks=self.rollbacks)
        self.guard.rebuild()

    def feed(self, rows: list[dict[str, Any]], until: str | None = None) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            out.append(self.guard.evaluate(row))
            self.clock.now += 0.01
            if until is not None and out[-1]["action"] == until:
                break
        return out

    def close(self) -> None:
        self.guard.close()
        self.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """The process over either store of the records: each test below holds for both."""
    if request.param == "sqlite":
        made = Setup(tmp_path / "data")
        yield made
        made.close()
        return
    with postgres_schema() as url:
        made = Setup(tmp_path / "data", store=PostgresRollbackStore(url))
        yield made
        made.close()


# --- the record, pure ---------------------------------------------------------------------------
def test_a_new_record_holds_what_abguard_did_at_once_and_waits_for_the_rest() -> None:
    record = Rollback.open("r1", "t", 100.0, "2026-11-24T09:20:30Z", "automatic_critical_risk", "why", "abguard", "d")
    done = {s.name for s in record.steps if s.state == StepState.DONE}
    assert done == {"status_update", "database_updates", "audit"}
    assert [p.state for p in record.phases(110.0)] == ["in_progress"] * 3
    assert [p.state for p in record.phases(131.0)] == ["overdue", "in_progress", "in_progress"]
    assert record.status(131.0) == "overdue"


def test_gateway_reports_are_idempotent_and_checked() -> None:
    record = Rollback.open("r1", "t", 100.0, "2026-11-24T09:20:30Z", "x", "why", "abguard", "d")
    once = record.reported("traffic_cutoff", "done", 105.0, "0% at 09:20:31")
    assert once.reported("traffic_cutoff", "done", 106.0, "0% at 09:20:31") == once
    assert once.reported("traffic_cutoff", "failed", 107.0) == once  # done is final
    failed = record.reported("cache_invalidation", "failed", 105.0, "redis timeout")
    assert failed.step("cache_invalidation").state == StepState.FAILED
    assert failed.reported("cache_invalidation", "done", 109.0).step("cache_invalidation").state == StepState.DONE
    for bad, words in (("nope", "unknown step"), ("feature_flags", "performed by abguard")):
        with pytest.raises(RollbackError, match=words):
            record.reported(bad, "done", 105.0)
    with pytest.raises(RollbackError, match="outcome"):
        record.reported("traffic_cutoff", "maybe", 105.0)


def test_phases_complete_in_time_or_late() -> None:
    record = Rollback.open("r1", "t", 100.0, "2026-11-24T09:20:30Z", "x", "why", "abguard", "d")
    for name in ("feature_flags", "notification"):
        record = record.with_step(name, StepState.DONE, 101.0)
    for name in sorted(GATEWAY_STEPS):
        record = record.reported(name, "done", 150.0 if name == "traffic_cutoff" else 110.0)
    assert [p.state for p in record.phases(300.0)] == ["complete_late", "complete", "complete"]
    assert record.complete() and record.status(300.0) == "complete"


# --- the process through the guard ----------------------------------------------------------------
def test_an_automatic_rollback_opens_a_record_and_flips_the_flag_first(setup: Setup) -> None:
    decisions = setup.feed(scenario("accuracy_regression"), until="immediate_rollback")
    decision = decisions[-1]
    record = setup.guard.get_rollback("accuracy-regression", "")
    assert (record.rollback_id, record.decision_id, record.trigger) == (
        decision["decision_id"],
        decision["decision_id"],
        "automatic_critical_risk",
    )
    assert setup.guard.test("accuracy-regression").test_status == "rollback_in_progress"
    setup.rollbacks.tick()
    assert setup.flags.calls == [("roll_back", "ff.challenger_accuracy-regression", None)]
    assert [a["alertname"] for a in setup.alerts.sent] == ["AbguardRollback"]
    record = setup.guard.get_rollback("accuracy-regression", record.rollback_id)
    assert record.step("feature_flags").state == StepState.DONE
    assert record.step("notification").state == StepState.DONE
    for name in sorted(GATEWAY_STEPS):
        setup.guard.report_step("accuracy-regression", record.rollback_id, name, "done", "gateway")
    assert setup.guard.get_rollback("accuracy-regression", "").status(setup.clock.now) == "complete"
    assert setup.guard.test("accuracy-regression").test_status == "rolled_back"


class FakeNotify:
    """The signed rollback webhook, failing its first `failures` events."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionRefusedError("receiver down")
        self.events.append(event)


class PostedAlerts:
    """An Alertmanager client that keeps what it was sent."""

    def __init__(self) -> None:
        self.posts: list[list[Alert]] = []

    def post(self, alerts: list[Alert]) -> None:
        self.posts.append(list(alerts))


def test_the_rollback_alert_is_sent_once_as_the_decision_s_own_alert(tmp_path: Path) -> None:
    """The decision's AbguardRollback alert is the record's notification step, not a second alert
    beside one of the record's own (Alertmanager would hold both)."""
    client = PostedAlerts()
    setup = Setup(tmp_path / "data")
    setup.rollbacks.alerts = Alerts(cast(Any, client), "prod")
    try:
        setup.feed(scenario("accuracy_regression"), until="immediate_rollback")
        setup.rollbacks.tick()
        sent = [a for post in client.posts for a in post if a.alertname == "AbguardRollback"]
        assert [(a.severity, a.condition, a.environment) for a in sent] == [("emergency", "accuracy", "prod")]
        step = setup.guard.get_rollback("accuracy-regression", "").step("notification")
        assert step.state == StepState.DONE
    finally:
        setup.close()


def test_rollback_events_go_to_the_signed_webhook_and_the_step_waits_for_every_channel(tmp_path: Path) -> None:
    notify = FakeNotify(failures=1)
    setup = Setup(tmp_path / "data")
    setup.rollbacks.notify = notify
    try:
        rows = scenario("accuracy_regression")
        decided = setup.feed(rows, until="immediate_rollback")
        rollback_id = setup.guard.get_rollback("accuracy-regression", "").rollback_id
        setup.rollbacks.tick()  # the alert goes out, the webhook fails: the step is not done
        step = setup.guard.get_rollback("accuracy-regression", rollback_id).step("notification")
        assert step.state == StepState.FAILED and "receiver down" in step.detail
        setup.clock.now += 2
        setup.rollbacks.tick()
        step = setup.guard.get_rollback("accuracy-regression", rollback_id).step("notification")
        assert step.state == StepState.DONE
        [opened] = notify.events
        assert (opened["event"], opened["test_id"], opened["rollback_id"], opened["requested_by"]) == (
            "rollback_opened",
            "accuracy-regression",
            rollback_id,
            "abguard",
        )
        assert opened["trigger"] == "automatic_critical_risk" and opened["reason"] == decided[-1]["reason"]
        setup.clock.now += 40  # the gateway reported nothing: the immediate phase is late
        setup.rollbacks.tick()
        setup.rollbacks.tick()
        late = [e for e in notify.events if e["event"] == "rollback_overdue"]
        assert [(e["phases"], e["steps_not_done"][:1]) for e in late] == [(["immediate"], ["traffic_cutoff"])]
        for row in rows[len(decided) : len(decided) + 6]:
            setup.guard.evaluate(row)
        setup.rollbacks.tick()
        [judged] = [e for e in notify.events if e["event"] == "rollback_recovery"]
        assert judged["status"] == "partial_recovery" and judged["checks"]["user_traffic"] < 1
    finally:
        setup.close()


def test_the_webhook_signs_each_event_and_a_refusal_is_an_error(tmp_path: Path) -> None:
    """The real RollbackWebhook against a local receiver that checks the signature."""
    Receiver.got = []
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver) as receiver:
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{receiver.server_address[1]}/rollbacks"
        RollbackWebhook(url, Receiver.secret).send({"event": "rollback_opened", "test_id": "t"})
        assert [(m["event"], m["test_id"]) for m in Receiver.got] == [("rollback_opened", "t")]
        assert Receiver.got[0]["sent_at"].endswith("Z")
        with pytest.raises(NotificationError, match="HTTP 401"):
            RollbackWebhook(url, "another secret").send({"event": "rollback_opened", "test_id": "t"})
        receiver.shutdown()
    with pytest.raises(NotificationError, match="cannot connect"):
        RollbackWebhook(url, "s", timeout=1).send({"event": "x"})
    with pytest.raises(ValueError, match="not an http"):
        RollbackWebhook("ftp://x", "s")


def test_a_traffic_cut_sets_the_flag_s_rollout_while_the_test_runs(setup: Setup) -> None:
    decisions = setup.feed(scenario("sustained_medium_risk"), until="reduce_rollout")
    assert decisions[-1]["enforced"] and decisions[-1]["target_rollout_percent"] == 5.0
    setup.rollbacks.tick()
    assert setup.flags.calls == [("set_rollout", "ff.challenger_sustained-medium-risk", 5.0)]


def test_a_rollout_still_retrying_never_lands_after_the_rollback(tmp_path: Path) -> None:
    """The newest flag change wins: the rollout that failed is superseded by the rollback, so the
    provider coming back does not hand the challenger its users again."""
    setup = Setup(tmp_path / "data", flags=FakeFlags(failures=1))
    try:
        rows = scenario("sustained_medium_risk")
        decided = setup.feed(rows, until="reduce_rollout")
        setup.rollbacks.tick()  # the rollout fails, and waits for its retry
        assert setup.flags.calls == []
        rest = setup.feed(rows[len(decided) :], until="rollback")
        assert rest[-1]["action"] == "rollback"
        for _ in range(3):
            setup.clock.now += 30
            setup.rollbacks.tick()
        assert setup.flags.calls == [("roll_back", "ff.challenger_sustained-medium-risk", None)]
        [rollout] = [i for i in setup.store.items(test_id="sustained-medium-risk") if i.kind == "flag_rollout"]
        assert rollout.done_at is not None and rollout.last_error.startswith("superseded by ")
        assert rollout.payload["percent"] == 5.0  # asked once: the gateway staying at 10% is not asked again
    finally:
        setup.close()


def test_a_failing_flag_provider_is_retried_with_backoff_until_it_works(tmp_path: Path) -> None:
    setup = Setup(tmp_path / "data", flags=FakeFlags(failures=2))
    try:
        setup.feed(scenario("accuracy_regression"), until="immediate_rollback")
        rollback_id = setup.guard.get_rollback("accuracy-regression", "").rollback_id
        setup.rollbacks.tick()
        step = setup.guard.get_rollback("accuracy-regression", rollback_id).step("feature_flags")
        assert (step.state, step.attempts) == (StepState.FAILED, 1)
        assert "provider down" in step.detail
        setup.rollbacks.tick()  # not due yet: the first retry waits 1 s
        assert setup.guard.get_rollback("accuracy-regression", rollback_id).step("feature_flags").attempts == 1
        for _ in range(2):
            setup.clock.now += 5
            setup.rollbacks.tick()
        step = setup.guard.get_rollback("accuracy-regression", rollback_id).step("feature_flags")
        assert step.state == StepState.DONE and setup.flags.calls[0][0] == "roll_back"
        outbox = setup.store.items(rollback_id=rollback_id)
        flag = next(item for item in outbox if item.kind == "flag_rollback")
        assert (flag.attempts, flag.done_at is not None) == (3, True)
    finally:
        setup.close()


def test_a_phase_past_its_deadline_raises_one_alert(setup: Setup) -> None:
    setup.feed(scenario("accuracy_regression"), until="immediate_rollback")
    setup.rollbacks.tick()
    setup.clock.now += 31
    setup.rollbacks.tick()
    setup.rollbacks.tick()  # the overdue alert is queued once, then sent once
    late = [a for a in setup.alerts.sent if a["alertname"] == "AbguardRollbackOverdue"]
    assert late == [{"alertname": "AbguardRollbackOverdue", "test_id": "accuracy-regression", "phase": "immediate"}]
    record = setup.guard.get_rollback("accuracy-regression", "")
    assert record.status(setup.clock.now) == "overdue"
    assert setup.guard.test("accuracy-regression").test_status == "rollback_in_progress"


def test_a_gateway_report_racing_the_overdue_alert_is_not_lost(setup: Setup) -> None:
    """The worker marks a late phase while the gateway reports a step: both changes stay (each
    change of a record is one read-modify-write transaction)."""
    setup.feed(scenario("accuracy_regression"), until="immediate_rollback")
    rollback_id = setup.guard.get_rollback("accuracy-regression", "").rollback_id
    setup.rollbacks.tick()
    setup.clock.now += 31
    reporter = threading.Thread(
        target=setup.guard.report_step, args=("accuracy-regression", rollback_id, "traffic_cutoff", "done", "gw")
    )
    overdue = setup.alerts.overdue

    def slow_overdue(record: Rollback, phase: str, now: float) -> list[dict[str, Any]]:
        reporter.start()  # the gateway's report arrives while the worker is between its read and its write
        time.sleep(0.3)
        return overdue(record, phase, now)

    setup.alerts.overdue = slow_overdue  # type: ignore[method-assign]
    setup.rollbacks.tick()
    reporter.join(10)
    record = setup.guard.get_rollback("accuracy-regression", rollback_id)
    assert record.alerted_overdue == ("immediate",)
    assert record.step("traffic_cutoff").state == StepState.DONE


def test_recovery_is_judged_two_minutes_after_the_rollback(setup: Setup) -> None:
    rows = scenario("accuracy_regression")
    decided = setup.feed(rows, until="immediate_rollback")
    after = rows[len(decided) :]
    for row in after[:6]:  # the gateway moved every user to the champion: the challenger serves nothing
        row["challenger"] = {**row["challenger"], "requests": 0}
        row["rollout_percent"] = 0
        setup.guard.evaluate(row)
    recovery = setup.guard.get_rollback("accuracy-regression", "").recovery
    assert recovery is not None and recovery.status == "successful_recovery"
    assert recovery.score >= 0.95 and set(recovery.checks) >= {"performance_restored", "user_traffic"}
    assert recovery.recovery_seconds == 30.0


def test_a_challenger_still_serving_after_the_rollback_is_a_partial_recovery(setup: Setup) -> None:
    rows = scenario("accuracy_regression")
    decided = setup.feed(rows, until="immediate_rollback")
    for row in rows[len(decided) : len(decided) + 6]:
        setup.guard.evaluate(row)  # the gateway never moved the traffic
    setup.rollbacks.tick()
    recovery = setup.guard.get_rollback("accuracy-regression", "").recovery
    assert recovery is not None and recovery.status == "partial_recovery"
    assert recovery.checks["user_traffic"] < 1.0 and recovery.recovery_seconds is None
    assert any(a["alertname"] == "AbguardRollbackOverdue" and a["phase"] == "recovery" for a in setup.alerts.sent)


def test_a_manual_rollback_goes_through_the_same_process_and_survives_a_restart(tmp_path: Path) -> None:
    setup = Setup(tmp_path / "data")
    rows = scenario("healthy")
    try:
        setup.feed(rows[:10])
        record = setup.guard.rollback("healthy", "customer complaints", "alice@example.com")
        assert (record.trigger, record.requested_by, record.reason) == (
            "manual_rollback",
            "alice@example.com",
            "customer complaints",
        )
        assert setup.guard.rollback("healthy", "again", "bob").rollback_id == record.rollback_id  # idempotent
        decision = setup.guard.evaluate(rows[10])
        assert (decision["action"], decision["triggered_by"], decision["target_rollout_percent"]) == (
            "rollback",
            "rolled_back_test",
            0.0,
        )
        assert "(manual_rollback)" in decision["reason"]
        setup.rollbacks.tick()
        assert setup.flags.calls == [("roll_back", "ff.challenger_healthy", None)]
    finally:
        setup.close()
    again = Setup(tmp_path / "data")
    try:
        assert again.guard.evaluate(rows[11])["action"] == "rollback"
        assert again.guard.test("healthy").test_status == "rollback_in_progress"
        again.guard.restart("healthy", "fixed")
        assert again.guard.evaluate(rows[12])["action"] == "continue"
    finally:
        again.close()


def test_a_rollback_decided_before_a_crash_is_carried_out_after_the_restart(tmp_path: Path) -> None:
    """The process dies between the logged rollback decision and its record: at the next start the
    record is opened from the log and the flag flips."""
    data = tmp_path / "data"
    RollbackStore(data / "rollbacks.sqlite3").close()  # serve opens the store before any decision
    decide_without_records(data, "accuracy_regression")
    setup = Setup(data)
    try:
        record = setup.guard.get_rollback("accuracy-regression", "")
        assert record.trigger == "automatic_critical_risk" and not record.closed
        setup.rollbacks.tick()
        assert setup.flags.calls == [("roll_back", "ff.challenger_accuracy-regression", None)]
    finally:
        setup.close()


def decide_without_records(data: Path, name: str, restart: bool = False) -> None:
    """A guard that keeps no rollback records decides the scenario up to its rollback (then restarts it)."""
    bare = Guard(POLICY, SqliteLog.in_dir(data))
    bare.rebuild()
    for row in scenario(name):
        if bare.evaluate(row)["action"] in ("rollback", "immediate_rollback"):
            break
    if restart:
        bare.restart(scenario(name)[0]["test_id"], "fixed")
    bare.close()


def test_rollbacks_decided_before_the_records_existed_are_recorded_closed_with_nothing_carried_out(
    tmp_path: Path,
) -> None:
    """An older data dir upgraded: no flag flips, pages or deadlines for rollbacks long past."""
    data = tmp_path / "data"
    decide_without_records(data, "accuracy_regression")
    setup = Setup(data)
    try:
        record = setup.guard.get_rollback("accuracy-regression", "")
        assert record.closed.startswith("decided before") and record.status(setup.clock.now) == "closed"
        setup.clock.now += 600
        setup.rollbacks.tick()
        assert setup.flags.calls == [] and setup.alerts.sent == []
    finally:
        setup.close()


def test_a_restarted_test_s_rollback_is_not_reopened_after_a_crash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    RollbackStore(data / "rollbacks.sqlite3").close()
    decide_without_records(data, "accuracy_regression", restart=True)
    setup = Setup(data)
    try:
        with pytest.raises(UnknownRollbackError):
            setup.guard.get_rollback("accuracy-regression", "")
        setup.rollbacks.tick()
        assert setup.flags.calls == []
    finally:
        setup.close()


def test_restart_test_closes_the_rollback_and_cancels_its_work(tmp_path: Path) -> None:
    """After RestartTest the old record no longer retries its flip, pages, or judges recovery on the
    test running again."""
    setup = Setup(tmp_path / "data", flags=FakeFlags(failures=100))
    try:
        decided = setup.feed(scenario("accuracy_regression"), until="immediate_rollback")
        setup.rollbacks.tick()  # the flip fails and waits for its retry
        rollback_id = setup.guard.get_rollback("accuracy-regression", "").rollback_id
        setup.guard.restart("accuracy-regression", "fixed")
        setup.flags.failures = 0
        healthy = [{**row, "test_id": "accuracy-regression"} for row in scenario("healthy")]
        after = [row for row in healthy if row["timestamp"] > decided[-1]["timestamp"]][:8]
        assert all(setup.guard.evaluate(row)["action"] != "immediate_rollback" for row in after)
        for _ in range(3):
            setup.clock.now += 60
            setup.rollbacks.tick()
        record = setup.guard.get_rollback("accuracy-regression", rollback_id)
        assert record.status(setup.clock.now) == "closed" and "restarted" in record.closed
        assert record.recovery is None
        assert ("roll_back", "ff.challenger_accuracy-regression", None) not in setup.flags.calls
        assert [a for a in setup.alerts.sent if a["alertname"] == "AbguardRollbackOverdue"] == []
    finally:
        setup.close()


def test_a_record_that_failed_to_open_is_opened_on_the_test_s_next_decision(tmp_path: Path) -> None:
    setup = Setup(tmp_path / "data")
    try:
        real = setup.store.open
        calls = {"n": 0}

        def failing(*args: Any, **kwargs: Any) -> bool:
            calls["n"] += 1
            if calls["n"] == 1:
                raise sqlite3.OperationalError("disk I/O error")
            return real(*args, **kwargs)

        setup.store.open = failing  # type: ignore[method-assign]
        rows = scenario("accuracy_regression")
        decided = setup.feed(rows, until="immediate_rollback")
        with pytest.raises(UnknownRollbackError):
            setup.guard.get_rollback("accuracy-regression", "")
        setup.guard.evaluate(rows[len(decided)])
        record = setup.guard.get_rollback("accuracy-regression", "")
        assert record.decision_id == decided[-1]["decision_id"]
        setup.rollbacks.tick()
        assert setup.flags.calls == [("roll_back", "ff.challenger_accuracy-regression", None)]
    finally:
        setup.close()


def test_outbox_items_of_one_channel_go_out_in_order_and_flags_first(tmp_path: Path) -> None:
    store = RollbackStore(tmp_path / "rollbacks.sqlite3")
    try:
        store.enqueue("t", [Work("alerts", {"n": 1}, "a1"), Work("alerts", {"n": 2}, "a2")], 0.0)
        store.enqueue("t", [Work("flag_rollout", {"flag": "f", "percent": 5}, "r1")], 0.0)
        first = store.due(1.0)
        assert [i.kind for i in first] == ["flag_rollout", "alerts", "alerts"]
        store.failed(first[1].id, "down", 10.0)  # a1 waits for its retry: a2 must not overtake it
        assert [i.payload for i in store.due(2.0)] == [{"flag": "f", "percent": 5}]
    finally:
        store.close()


def test_audit_export_adds_the_recovery_time_and_the_manual_rollbacks_with_who_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The export joins the log's rollback decisions with their records: recovery time and verdict,
    whether the process completed; a manual rollback is exported from its record, with who asked."""
    from engine.cli import main

    data = tmp_path / "data"
    setup = Setup(data)
    try:
        rows = scenario("accuracy_regression")
        decided = setup.feed(rows, until="immediate_rollback")
        for row in rows[len(decided) : len(decided) + 6]:  # the gateway moved every user to the champion
            setup.guard.evaluate({**row, "challenger": {**row["challenger"], "requests": 0}, "rollout_percent": 0})
        setup.feed(scenario("healthy")[:4])
        setup.clock.now = 1_900_000_000.0
        setup.guard.rollback("healthy", "customer complaints", "alice@example.com")
    finally:
        setup.close()
    assert main(["audit", "export", "--data-dir", str(data)]) == 0
    automatic, manual = json.loads(capsys.readouterr().out)["records"]
    assert (automatic["test_id"], automatic["requested_by"], automatic["recovery_time"]) == (
        "accuracy-regression",
        "abguard",
        30.0,
    )
    assert (automatic["recovery_status"], automatic["rollback_status"]) == ("successful_recovery", "incomplete")
    assert automatic["seq"] is not None and automatic["hash"]
    assert (manual["test_id"], manual["triggered_by"], manual["requested_by"], manual["trigger_reason"]) == (
        "healthy",
        "manual_rollback",
        "alice@example.com",
        "customer complaints",
    )
    assert manual["seq"] is None and manual["hash"] is None  # no decision of the chained log
    assert main(["audit", "export", "--data-dir", str(data), "--test", "healthy", "--format", "csv"]) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (row["requested_by"], row["triggered_by"], row["seq"]) == ("alice@example.com", "manual_rollback", "")


# --- the RPCs -----------------------------------------------------------------------------------
@pytest.fixture
def stub(setup: Setup) -> Iterator[Any]:
    server, port, _ = create_server(setup.guard, "127.0.0.1:0", 4, None)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield rpc.RiskServiceStub(channel)
    server.stop(2).wait()


def test_rollback_rpcs(setup: Setup, stub: Any) -> None:
    for row in scenario("healthy")[:5]:
        stub.Evaluate(pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot())), timeout=10)
    made = stub.RollbackTest(pb.RollbackTestRequest(test_id="healthy", reason="bad canary", requested_by="ops"))
    assert (made.trigger, made.requested_by, made.status) == ("manual_rollback", "ops", "in_progress")
    assert [p.name for p in made.phases] == ["immediate", "safe_transition", "cleanup"]
    reported = stub.ReportRollbackStep(
        pb.ReportRollbackStepRequest(
            test_id="healthy", rollback_id=made.rollback_id, step="traffic_cutoff", outcome="done", detail="0%"
        )
    )
    step = next(s for s in reported.steps if s.name == "traffic_cutoff")
    assert (step.state, step.owner, step.detail) == ("done", "gateway", "0%")
    got = stub.GetRollback(pb.GetRollbackRequest(test_id="healthy"))
    assert got.rollback_id == made.rollback_id
    listed = stub.ListRollbacks(pb.ListRollbacksRequest())
    assert [r.rollback_id for r in listed.rollbacks] == [made.rollback_id]
    test = stub.GetTest(pb.GetTestRequest(test_id="healthy"))
    assert test.test_status == pb.TEST_STATUS_ROLLBACK_IN_PROGRESS
    calls: list[tuple[Any, Any, grpc.StatusCode]] = [
        (stub.GetRollback, pb.GetRollbackRequest(test_id="healthy", rollback_id="nope"), grpc.StatusCode.NOT_FOUND),
        (
            stub.ReportRollbackStep,
            pb.ReportRollbackStepRequest(test_id="healthy", rollback_id=made.rollback_id, step="x", outcome="done"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            stub.ReportRollbackStep,
            pb.ReportRollbackStepRequest(
                test_id="healthy", rollback_id=made.rollback_id, step="feature_flags", outcome="done"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            stub.RollbackTest,
            pb.RollbackTestRequest(test_id="healthy", requested_by="ops"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (stub.RollbackTest, pb.RollbackTestRequest(test_id="healthy", reason="x"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            stub.RollbackTest,
            pb.RollbackTestRequest(test_id="nope", reason="x", requested_by="ops"),
            grpc.StatusCode.NOT_FOUND,
        ),
    ]
    for method, request, code in calls:
        with pytest.raises(grpc.RpcError) as raised:
            method(request, timeout=5)
        assert cast(grpc.Call, raised.value).code() == code


# --- a real process killed between the decision and the flag flip ---------------------------------
class Receiver(http.server.BaseHTTPRequestHandler):
    secret = "s3cret"
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify_signature(self.secret, body, self.headers.get("X-Abguard-Signature"))
        if ok:  # before the answer: the sender may look as soon as it has one
            Receiver.got.append(json.loads(body))
        self.send_response(204 if ok else 401)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _serve(data: Path, config: Path) -> tuple[subprocess.Popen[str], str]:
    command = [
        str(Path(sys.executable).parent / "abguard"), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data),
        "--policies", str(ROOT / "policies"), "--flags", str(config),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ABGUARD_TEST_WEBHOOK_SECRET": Receiver.secret}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())
    return process, started["listen"]


def test_killed_between_the_rollback_and_its_flag_flip_the_flip_happens_after_restart(tmp_path: Path) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver) as probe:
        port = probe.server_address[1]  # a free port, closed again: the receiver is down at first
    config = tmp_path / "flags.yaml"
    config.write_text(
        "provider: webhook\nflag_prefix: ff.challenger_\n"
        f"webhook: {{url: 'http://127.0.0.1:{port}/flags', secret_env: ABGUARD_TEST_WEBHOOK_SECRET, timeout: 1}}\n"
    )
    data = tmp_path / "data"
    process, listen = _serve(data, config)
    try:
        with grpc.insecure_channel(listen) as channel:
            stub = rpc.RiskServiceStub(channel)
            for row in scenario("accuracy_regression"):
                request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))
                if (
                    stub.Evaluate(request, timeout=30, wait_for_ready=True).decision.action
                    == pb.ACTION_IMMEDIATE_ROLLBACK
                ):
                    break
            time.sleep(1.5)  # the outbox tries and fails: nobody listens yet
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    Receiver.got = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    process, listen = _serve(data, config)
    try:
        deadline = time.monotonic() + 30
        while not Receiver.got and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(m["event"], m["flag"]) for m in Receiver.got] == [("rollback", "ff.challenger_accuracy-regression")]
        with grpc.insecure_channel(listen) as channel:
            record = rpc.RiskServiceStub(channel).GetRollback(
                pb.GetRollbackRequest(test_id="accuracy-regression"), timeout=10, wait_for_ready=True
            )
        step = next(s for s in record.steps if s.name == "feature_flags")
        assert step.state == "done" and step.attempts >= 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        receiver.shutdown()
        receiver.server_close()
