"""Alerts to Prometheus Alertmanager: the pure mapping, the example config, and the real server end to end.

The end-to-end tests start the real `prometheus-alertmanager` (installed by .ci/deps/alertmanager.sh)
with a webhook receiver served by this process, replay a scenario through the real engine, post
what each decision fires and resolves, and read what Alertmanager notifies.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.contract import (
    Action,
    ConditionResult,
    ConditionStatus,
    Decision,
    IndicatorResult,
    PolicyRef,
    RiskLevel,
    TestStatus,
    format_time,
    parse_snapshot,
    parse_time,
)
from engine.integrations.alertmanager import (
    CONDITION_ALERT,
    ROLLBACK_ALERT,
    Alert,
    AlertDeliveryError,
    AlertKey,
    AlertmanagerClient,
    AlertUpdate,
    Severity,
    alerts_for,
)
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.service import Guard
from engine.service.sinks import STATE_ALERT, build_rollbacks
from engine.state import StateCodec, new_key
from engine.store import Checkpoint
from engine.store.sqlite import SqliteLog
from tests.support.hostile_states import crafted_pickle

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTMANAGER = "prometheus-alertmanager"
WAIT = 15.0  # seconds to wait for a notification (group_wait and group_interval are 1 s)

# ---------------------------------------------------------------------------------------------
# Decisions: built by hand for the mapping's corners, replayed through the real engine otherwise


def decision(
    statuses: dict[str, ConditionStatus] | None = None,
    action: Action = Action.CONTINUE,
    triggered_by: str | None = None,
    timestamp: str = "2026-11-24T09:00:30Z",
    test_id: str = "t1",
) -> Decision:
    """A decision whose conditions have the given statuses (each critical one with a fired indicator)."""
    conditions = [
        ConditionResult(
            name=name,
            status=status,
            severity=1.0 if status == ConditionStatus.CRITICAL else 0.0,
            weight=0.2,
            contribution=0.0,
            samples=1000.0,
            min_samples=100,
            indicators=[IndicatorResult(f"{name}.high", 1.0, True, True, 30.0, 30.0, 9.0, 6.0, f"{name}.value 9 >= 6")]
            if status == ConditionStatus.CRITICAL
            else [],
        )
        for name, status in (statuses or {}).items()
    ]
    return Decision(
        decision_id=f"id-{timestamp}",
        test_id=test_id,
        timestamp=timestamp,
        action=action,
        confidence=0.9,
        reason=f"reason at {timestamp}",
        triggered_by=triggered_by,
        risk_score=0.5,
        risk_level=RiskLevel.HIGH,
        conditions=conditions,
        target_rollout_percent=0.0 if action.rolls_back else 10.0,
        actions=[],
        enforced=True,
        policy=PolicyRef("default", 1, "sha256:0"),
        test_status=TestStatus.ROLLED_BACK if action.rolls_back else TestStatus.RUNNING,
    )


def frames(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]


def replay(snapshots: list[dict[str, Any]], test_id: str, last_at: float) -> list[Decision]:
    """The decisions of the engine for these snapshots, 30 s apart, renamed, the last one at `last_at`."""
    evaluator = Evaluator(load_effective([str(ROOT / "policies")]))
    first = last_at - 30 * (len(snapshots) - 1)
    return [
        evaluator.evaluate(parse_snapshot({**raw, "test_id": test_id, "timestamp": format_time(first + 30 * n)}))
        for n, raw in enumerate(snapshots)
    ]


def latency_spike_and_recovery() -> list[dict[str, Any]]:
    """latency_spike up to its immediate rollback (frame 31), then its healthy first minutes again:
    latency is critical at 31 and 32 and ok from 33 on, while the test stays rolled back."""
    spike = frames("latency_spike")
    return spike[:32] + spike[5:15]


def updates(decisions: list[Decision], environment: str | None = None) -> list[AlertUpdate]:
    """What each decision fires and resolves, each starting from what the one before left active."""
    active: frozenset[AlertKey] = frozenset()
    out = []
    for each in decisions:
        update = alerts_for(each, active, environment=environment)
        active = update.active
        out.append(update)
    return out


def keys(alerts: tuple[Alert, ...]) -> set[tuple[str, str, str]]:
    return {(a.alertname, a.condition, a.severity.value) for a in alerts}


# ---------------------------------------------------------------------------------------------
# (e) the mapping, pure


def test_a_triggered_condition_fires_a_warning_and_a_critical_one_a_critical_alert() -> None:
    ok, triggered, critical = ConditionStatus.OK, ConditionStatus.TRIGGERED, ConditionStatus.CRITICAL
    update = alerts_for(decision({"accuracy": ok, "latency": triggered, "errors": critical}), frozenset())
    assert keys(update.fire) == {(CONDITION_ALERT, "latency", "warning"), (CONDITION_ALERT, "errors", "critical")}
    assert update.resolve == ()
    assert update.active == {a.key for a in update.fire}


def test_an_alert_carries_the_labels_annotations_and_rfc3339_times_of_api_v2() -> None:
    made = decision({"latency": ConditionStatus.CRITICAL}, timestamp="2026-11-24T11:00:30+02:00")
    alert = alerts_for(made, frozenset(), environment="prod", generator_url="https://grafana.example/t1").fire[0]
    assert alert.to_json() == {
        "labels": {
            "alertname": CONDITION_ALERT,
            "severity": "critical",
            "test_id": "t1",
            "condition": "latency",
            "environment": "prod",
        },
        "annotations": {
            "summary": made.reason,
            "decision_id": made.decision_id,
            "description": "latency critical: latency.value 9 >= 6 (risk score 0.50, action continue)",
        },
        "startsAt": "2026-11-24T09:00:30Z",  # the offset turned into UTC with a Z
        "generatorURL": "https://grafana.example/t1",
    }  # no endsAt while firing


def test_a_condition_back_to_ok_is_resolved_with_the_same_labels_at_the_decision_time() -> None:
    first = alerts_for(decision({"latency": ConditionStatus.TRIGGERED}), frozenset(), environment="dev")
    later = decision({"latency": ConditionStatus.OK}, timestamp="2026-11-24T09:01:00Z")
    second = alerts_for(later, first.active, environment="dev")
    assert second.fire == ()
    (resolved,) = second.resolve
    assert resolved.labels == first.fire[0].labels
    assert resolved.to_json()["endsAt"] == "2026-11-24T09:01:00Z"
    assert second.active == frozenset()


def test_an_escalation_resolves_the_warning_and_fires_the_critical_alert() -> None:
    first = alerts_for(decision({"latency": ConditionStatus.TRIGGERED}), frozenset())
    second = alerts_for(decision({"latency": ConditionStatus.CRITICAL}, timestamp="2026-11-24T09:01:00Z"), first.active)
    assert keys(second.fire) == {(CONDITION_ALERT, "latency", "critical")}
    assert keys(second.resolve) == {(CONDITION_ALERT, "latency", "warning")}


@pytest.mark.parametrize("status", [ConditionStatus.INCONCLUSIVE, ConditionStatus.ERROR])
def test_an_inconclusive_or_failed_condition_keeps_its_alert_firing(status: ConditionStatus) -> None:
    first = alerts_for(decision({"latency": ConditionStatus.CRITICAL}), frozenset())
    second = alerts_for(decision({"latency": status}, timestamp="2026-11-24T09:01:00Z"), first.active)
    assert keys(second.fire) == {(CONDITION_ALERT, "latency", "critical")}
    assert second.resolve == ()
    assert alerts_for(decision({"latency": status}), frozenset()).fire == ()  # and raises none of its own


def test_an_immediate_rollback_adds_an_emergency_alert_naming_the_critical_conditions() -> None:
    statuses = {
        "accuracy": ConditionStatus.CRITICAL,
        "latency": ConditionStatus.TRIGGERED,
        "error_rate": ConditionStatus.CRITICAL,
    }
    made = decision(statuses, Action.IMMEDIATE_ROLLBACK, "automatic_critical_risk")
    update = alerts_for(made, frozenset())
    assert (ROLLBACK_ALERT, "accuracy,error_rate", "emergency") in keys(update.fire)
    assert len(update.fire) == 4  # and the three condition alerts


def test_an_automatic_rollback_is_a_rollback_alert_kept_while_the_test_stays_rolled_back() -> None:
    risky = {"accuracy": ConditionStatus.TRIGGERED, "latency": ConditionStatus.TRIGGERED}
    first = alerts_for(decision(risky, Action.ROLLBACK, "automatic_high_risk"), frozenset())
    rollback = AlertKey(ROLLBACK_ALERT, "t1", "accuracy,latency", Severity.ROLLBACK)
    assert rollback in first.active
    repeat = decision({"accuracy": ConditionStatus.OK}, Action.ROLLBACK, "rolled_back_test", "2026-11-24T09:01:00Z")
    second = alerts_for(repeat, first.active)
    assert [a.key for a in second.fire] == [rollback]  # re-sent, no new rollback alert
    assert keys(second.resolve) == {(CONDITION_ALERT, "accuracy", "warning"), (CONDITION_ALERT, "latency", "warning")}
    restarted = alerts_for(decision({"accuracy": ConditionStatus.OK}, timestamp="2026-11-24T09:01:30Z"), second.active)
    assert [a.key for a in restarted.resolve] == [rollback]
    assert restarted.active == frozenset()


def test_a_repeated_rollback_raises_no_rollback_alert_of_its_own() -> None:
    repeat = decision({"latency": ConditionStatus.CRITICAL}, Action.ROLLBACK, "rolled_back_test")
    assert keys(alerts_for(repeat, frozenset()).fire) == {(CONDITION_ALERT, "latency", "critical")}


def test_the_alerts_of_other_tests_are_left_as_they_are() -> None:
    other = AlertKey(CONDITION_ALERT, "t2", "latency", Severity.CRITICAL)
    update = alerts_for(decision({"latency": ConditionStatus.OK}), frozenset({other}))
    assert update.resolve == ()
    assert update.active == {other}


def test_the_latency_spike_replayed_through_the_engine_alerts_rolls_back_and_recovers() -> None:
    """The spike's first interval is one batch: the sequential increase needs four (a transient could
    look the same), so latency's first alert is the critical one, when p95 has held twice its limit."""
    seen = updates(replay(latency_spike_and_recovery()[:34], "spike", parse_time("2026-11-24T09:16:30Z")))
    assert all(u.fire == () and u.resolve == () for u in seen[:30])
    assert keys(seen[30].fire) == {(CONDITION_ALERT, "anomaly", "warning")}
    assert keys(seen[31].fire) == {
        (CONDITION_ALERT, "latency", "critical"),
        (CONDITION_ALERT, "anomaly", "warning"),
        (ROLLBACK_ALERT, "latency", "emergency"),
    }
    assert keys(seen[31].resolve) == set()
    assert keys(seen[33].resolve) == {(CONDITION_ALERT, "latency", "critical")}  # latency is ok again
    assert keys(seen[33].fire) == {(ROLLBACK_ALERT, "latency", "emergency")}  # the test is still rolled back


def test_the_client_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="http"):
        AlertmanagerClient("file:///etc/passwd")


# ---------------------------------------------------------------------------------------------
# The example configuration, checked by Alertmanager's own tool


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("amtool") is None:
        pytest.skip("amtool is not installed (package prometheus-alertmanager; .ci/deps/alertmanager.sh)")
    return subprocess.run(["amtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)


def test_the_example_config_passes_amtool_check_config() -> None:
    done = amtool("check-config", str(EXAMPLE_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("environment", "severity", "receivers"),
    [
        ("prod", "emergency", "pagerduty,email,slack"),
        ("prod", "critical", "pagerduty,email,slack"),
        ("prod", "rollback", "pagerduty,email,slack"),
        ("prod", "warning", "email,slack"),
        ("staging", "emergency", "email,slack"),
        ("dev", "emergency", "slack"),
        ("", "critical", "slack"),
    ],
)
def test_the_example_config_routes_each_environment_to_its_channels(
    environment: str, severity: str, receivers: str
) -> None:
    labels = [f"alertname={ROLLBACK_ALERT}", "test_id=t1", f"severity={severity}"]
    labels += [f"environment={environment}"] if environment else []
    done = amtool("config", "routes", "test", f"--config.file={EXAMPLE_CONFIG}", *labels)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == receivers


# ---------------------------------------------------------------------------------------------
# The real Alertmanager, notifying a webhook served here


class Webhook:
    """An HTTP server in a thread that keeps every notification Alertmanager posts to /hook."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.changed:
                    hook.payloads.append(json.loads(body))
                    hook.changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
        """The first notified alert that matches, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for payload in self.payloads:
                    for alert in payload["alerts"]:
                        if match(alert):
                            return dict(alert)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching alert notified within {timeout}s; got {self.payloads}")
                self.changed.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Running:
    url: str
    webhook: Webhook
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


TEST_CONFIG = """\
global:
  resolve_timeout: 5m
route:
  receiver: hook
  group_by: [alertname, test_id]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The real Alertmanager on a free 127.0.0.1 port, clustering off, notifying a local webhook."""
    binary = shutil.which(ALERTMANAGER)
    if binary is None:
        pytest.skip(f"{ALERTMANAGER} is not installed: run .ci/deps/alertmanager.sh (apt prometheus-alertmanager)")
    folder = tmp_path_factory.mktemp("alertmanager")
    webhook = Webhook()
    config = folder / "alertmanager.yml"
    config.write_text(TEST_CONFIG.format(url=webhook.url))
    port = free_port()
    log = folder / "alertmanager.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield Running(url, webhook, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        webhook.close()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Alertmanager exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"Alertmanager not ready within {timeout}s:\n{log.read_text()}")


def post_all(client: AlertmanagerClient, decisions: list[Decision], environment: str = "dev") -> list[AlertUpdate]:
    """What the service does after each decision: post the alerts it fires and resolves."""
    done = updates(decisions, environment)
    for update in done:
        client.post(update.alerts)
    return done


def labelled(
    alertname: str, test_id: str, condition: str, severity: str, status: str
) -> Callable[[dict[str, Any]], bool]:
    want = {"alertname": alertname, "test_id": test_id, "condition": condition, "severity": severity}

    def match(alert: dict[str, Any]) -> bool:
        return bool(alert["status"] == status and all(alert["labels"].get(k) == v for k, v in want.items()))

    return match


def test_a_critical_condition_reaches_the_webhook_with_its_labels_and_annotations(alertmanager: Running) -> None:
    decisions = replay(latency_spike_and_recovery()[:32], "am-critical", time.time() - 1)
    post_all(AlertmanagerClient(alertmanager.url), decisions)
    critical = decisions[31]
    got = alertmanager.webhook.wait_for(labelled(CONDITION_ALERT, "am-critical", "latency", "critical", "firing"))
    assert got["labels"] == {
        "alertname": CONDITION_ALERT,
        "severity": "critical",
        "test_id": "am-critical",
        "condition": "latency",
        "environment": "dev",
    }
    assert got["annotations"]["summary"] == critical.reason
    assert got["annotations"]["decision_id"] == critical.decision_id
    assert got["annotations"]["description"].startswith("latency critical: latency.")
    assert parse_time(got["startsAt"]) == parse_time(critical.timestamp)


def test_a_condition_back_to_ok_is_notified_as_resolved(alertmanager: Running) -> None:
    client = AlertmanagerClient(alertmanager.url)
    decisions = replay(latency_spike_and_recovery()[:34], "am-resolve", time.time() - 1)
    before = post_all(client, decisions[:33])
    alertmanager.webhook.wait_for(labelled(CONDITION_ALERT, "am-resolve", "latency", "critical", "firing"))
    assert {c.name: c.status for c in decisions[33].conditions}["latency"] == ConditionStatus.OK
    recovered = alerts_for(decisions[33], before[-1].active, environment="dev")
    client.post(recovered.alerts)
    got = alertmanager.webhook.wait_for(labelled(CONDITION_ALERT, "am-resolve", "latency", "critical", "resolved"))
    assert parse_time(got["endsAt"]) == parse_time(decisions[33].timestamp)
    assert (ROLLBACK_ALERT, "latency", "emergency") in keys(recovered.fire)  # the rollback page stays


def test_an_immediate_rollback_is_an_emergency_alert(alertmanager: Running) -> None:
    decisions = replay(frames("accuracy_regression")[:41], "am-rollback", time.time() - 1)
    assert decisions[-1].action == Action.IMMEDIATE_ROLLBACK
    post_all(AlertmanagerClient(alertmanager.url), decisions)
    got = alertmanager.webhook.wait_for(labelled(ROLLBACK_ALERT, "am-rollback", "accuracy", "emergency", "firing"))
    assert got["annotations"]["summary"] == decisions[-1].reason
    assert "action immediate_rollback (triggered by automatic_critical_risk)" in got["annotations"]["description"]


def test_alertmanager_s_refusal_is_a_delivery_error_with_its_http_status(alertmanager: Running) -> None:
    backwards = Alert(CONDITION_ALERT, Severity.WARNING, "am-bad", "latency", "s", "d", "x", "2026-11-24T09:01:00Z")
    with pytest.raises(AlertDeliveryError) as raised:
        AlertmanagerClient(alertmanager.url).post([backwards.resolved("2026-11-24T09:00:00Z")])
    assert raised.value.status == 400
    assert "start time must be before end time" in raised.value.detail


def test_a_closed_port_is_a_delivery_error_naming_the_os_error() -> None:
    client = AlertmanagerClient(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    alert = Alert(CONDITION_ALERT, Severity.WARNING, "t1", "latency", "s", "d", "x", "2026-11-24T09:00:00Z")
    with pytest.raises(AlertDeliveryError) as raised:
        client.post([alert])
    assert raised.value.status is None
    assert "refused" in raised.value.detail.lower()
    assert raised.value.url.endswith("/api/v2/alerts")


def test_a_rejected_stored_state_reaches_alertmanager_as_a_critical_platform_alert(
    alertmanager: Running, tmp_path: Path
) -> None:
    """A tampered checkpoint: the restarted service rebuilds the test and its outbox sends
    AbguardStateRejected through the real Alertmanager, which notifies the webhook."""
    policy = load_effective([str(ROOT / "policies")])
    data = tmp_path / "data"
    rows = frames("healthy")[:12]
    test_id = str(rows[0]["test_id"])
    first = Guard(policy, SqliteLog.in_dir(data))
    for row in rows[:10]:
        first.evaluate(row)
    last = first.log.last(test_id)
    assert last is not None
    marker = tmp_path / "pwned"
    layout = StateCodec(policy, first.log.state_key(new_key)).layout
    first.log.save_checkpoint(Checkpoint(test_id, last.seq, policy.digest, layout, crafted_pickle(marker)))
    first.close()
    rollbacks = build_rollbacks(data, None, alertmanager.url, policy, None)
    again = Guard(policy, SqliteLog.in_dir(data), rollbacks=rollbacks)
    try:
        again.evaluate(rows[10])
        rollbacks.tick()
        got = alertmanager.webhook.wait_for(labelled(STATE_ALERT, test_id, "state_checkpoint", "critical", "firing"))
    finally:
        again.close()
    assert "rebuilt from the decision log" in got["annotations"]["summary"]
    assert "not a sealed state" in got["annotations"]["description"]
    assert not marker.exists()
