"""Decisions as Prometheus Alertmanager alerts: what fires, what resolves, and the POST that sends them.

abguard only states what is wrong; routing, grouping, silencing and the receivers (Slack, email,
PagerDuty) are Alertmanager's job (deploy/alertmanager/alertmanager.yml is an example).

    decision                         alert                      severity   condition label
    a condition `triggered`          AbguardConditionTriggered  warning    the condition
    a condition `critical`           AbguardConditionTriggered  critical   the condition
    action immediate_rollback        AbguardRollback            emergency  the critical conditions, joined by ','
    action rollback (automatic)      AbguardRollback            rollback   the triggered and critical ones, by ','
    a condition back to `ok`         its alert resolved (same labels, endsAt = the decision's timestamp)
    a condition inconclusive with    AbguardConditionInconclusive  warning  the condition (resolved once it is
      a note (labels stopped)                                                 judged again)

Labels: alertname, severity, test_id, condition, and environment when given. Annotations: summary
(the decision's reason), decision_id, description (the condition's fired indicators, or the action).

An alert is identified by its key (alertname, test_id, condition, severity): its labels, as
Alertmanager identifies it, less the environment, which is the caller's constant. The severity is
part of it so that an escalation (warning -> critical) resolves the warning alert and fires a
critical one, rather than leaving the warning to time out.

- Every decision re-sends the alerts still firing, as Prometheus re-sends its rules' alerts:
  Alertmanager resolves an alert not heard of for its `resolve_timeout`.
- A condition back to `ok` (or gone from the policy) resolves its alert: the same labels with
  endsAt set to the decision's timestamp. An `inconclusive` or `error` condition is never `ok`:
  its alert keeps firing until the condition is judged again.
- The rollback alert keeps firing while later decisions say the test is rolled back
  (`rolled_back_test`), so a page is not resolved before anyone has seen it; the decision after
  RestartTest resolves it.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence, Set
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, NamedTuple

from ..contract import Action, ConditionResult, ConditionStatus, Decision, format_time, parse_time

CONDITION_ALERT = "AbguardConditionTriggered"
INCONCLUSIVE_ALERT = "AbguardConditionInconclusive"  # a condition that cannot be judged for a reason (stale labels)
ROLLBACK_ALERT = "AbguardRollback"
ROLLED_BACK_TEST = "rolled_back_test"  # triggered_by of the decisions repeating an earlier rollback
_DETAIL_LIMIT = 300  # characters of an error answer kept in AlertDeliveryError


class Severity(StrEnum):
    """The severities of the spec's alert configuration; the receivers route on them."""

    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"
    ROLLBACK = "rollback"


class AlertKey(NamedTuple):
    """What identifies an alert across decisions (its labels, less the environment)."""

    alertname: str
    test_id: str
    condition: str
    severity: Severity


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert in Alertmanager's terms: labels, annotations and when it started or ended."""

    alertname: str
    severity: Severity
    test_id: str
    condition: str
    summary: str
    decision_id: str
    description: str
    starts_at: str  # RFC 3339, UTC, with a Z
    ends_at: str | None = None  # None while firing
    environment: str | None = None
    generator_url: str | None = None

    @property
    def key(self) -> AlertKey:
        return AlertKey(self.alertname, self.test_id, self.condition, self.severity)

    @property
    def labels(self) -> dict[str, str]:
        labels = {
            "alertname": self.alertname,
            "severity": self.severity.value,
            "test_id": self.test_id,
            "condition": self.condition,
        }
        if self.environment:
            labels["environment"] = self.environment
        return labels

    @property
    def annotations(self) -> dict[str, str]:
        return {"summary": self.summary, "decision_id": self.decision_id, "description": self.description}

    def resolved(self, at: str) -> Alert:
        """The same alert (same labels) ended at `at`: how Alertmanager is told it is over."""
        return replace(self, ends_at=at)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of Alertmanager's API v2 (POST /api/v2/alerts takes a list of them)."""
        body: dict[str, Any] = {"labels": self.labels, "annotations": self.annotations, "startsAt": self.starts_at}
        if self.ends_at is not None:
            body["endsAt"] = self.ends_at
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """What one decision changes: alerts firing (re-sent), alerts resolved, and the keys active after it."""

    fire: tuple[Alert, ...]
    resolve: tuple[Alert, ...]
    active: frozenset[AlertKey]  # pass back in as `previous` with the next decision

    @property
    def alerts(self) -> list[Alert]:
        """Everything to POST for this decision, firing first."""
        return [*self.fire, *self.resolve]


def alerts_for(
    decision: Decision,
    previous: Set[AlertKey],
    *,
    environment: str | None = None,
    generator_url: str | None = None,
) -> AlertUpdate:
    """The alerts a decision fires and resolves, given the keys active before it (of any tests)."""
    at = format_time(parse_time(decision.timestamp))
    mine = {key for key in previous if key.test_id == decision.test_id}

    def alert(key: AlertKey, description: str) -> Alert:
        return Alert(
            alertname=key.alertname,
            severity=key.severity,
            test_id=key.test_id,
            condition=key.condition,
            summary=decision.reason,
            decision_id=decision.decision_id,
            description=description,
            starts_at=at,
            environment=environment,
            generator_url=generator_url,
        )

    firing: dict[AlertKey, Alert] = {}
    for condition in decision.conditions:
        severity = _CONDITION_SEVERITY.get(condition.status)
        if severity is not None:
            key = AlertKey(CONDITION_ALERT, decision.test_id, condition.name, severity)
            firing[key] = alert(key, _condition_description(condition, decision))
        elif condition.note:  # inconclusive for a reason someone must act on (labels stopped arriving)
            key = AlertKey(INCONCLUSIVE_ALERT, decision.test_id, condition.name, Severity.WARNING)
            firing[key] = alert(key, f"{condition.name} cannot be judged: {condition.note}")
            for key in mine:
                if key.alertname == CONDITION_ALERT and key.condition == condition.name:
                    firing[key] = alert(key, f"{condition.name} is {condition.status.value}: kept firing until judged")
        elif condition.status in (ConditionStatus.INCONCLUSIVE, ConditionStatus.ERROR):
            for key in mine:
                if key.alertname == CONDITION_ALERT and key.condition == condition.name:
                    firing[key] = alert(key, f"{condition.name} is {condition.status.value}: kept firing until judged")
    rollback = _rollback_key(decision)
    if rollback is not None:
        firing[rollback] = alert(rollback, _action_description(decision))
    elif decision.triggered_by == ROLLED_BACK_TEST:
        for key in mine:
            if key.alertname == ROLLBACK_ALERT:
                firing[key] = alert(key, f"the test is still rolled back; {_action_description(decision)}")
    fire = tuple(firing[key] for key in sorted(firing))
    resolve = tuple(
        alert(key, f"{key.condition}: resolved by decision {decision.decision_id}").resolved(at)
        for key in sorted(mine - firing.keys())
    )
    return AlertUpdate(fire, resolve, frozenset((previous - mine) | firing.keys()))


_CONDITION_SEVERITY = {ConditionStatus.TRIGGERED: Severity.WARNING, ConditionStatus.CRITICAL: Severity.CRITICAL}


def _rollback_key(decision: Decision) -> AlertKey | None:
    """The rollback alert a decision raises itself, if any (not the repeats of an earlier rollback)."""
    critical = [c.name for c in decision.conditions if c.status == ConditionStatus.CRITICAL]
    risky = [c.name for c in decision.conditions if c.status in _CONDITION_SEVERITY]
    if decision.action == Action.IMMEDIATE_ROLLBACK:
        severity, named = Severity.EMERGENCY, critical or risky
    elif decision.action == Action.ROLLBACK and decision.triggered_by != ROLLED_BACK_TEST:
        severity, named = Severity.ROLLBACK, risky
    else:
        return None
    # a rule on the score alone names no condition: the rule's trigger stands in (never an empty label)
    condition = ",".join(named) or decision.triggered_by or decision.action.value
    return AlertKey(ROLLBACK_ALERT, decision.test_id, condition, severity)


def _condition_description(condition: ConditionResult, decision: Decision) -> str:
    fired = "; ".join(i.detail for i in condition.indicators if i.counting) or "no indicator held long enough"
    return (
        f"{condition.name} {condition.status.value}: {fired} "
        f"(risk score {decision.risk_score:.2f}, action {decision.action.value})"
    )


def _action_description(decision: Decision) -> str:
    target = decision.target_rollout_percent
    traffic = f", challenger traffic to {target:g}%" if target is not None else ""
    return (
        f"action {decision.action.value} (triggered by {decision.triggered_by}){traffic}; "
        f"risk score {decision.risk_score:.2f}, level {decision.risk_level.value}"
    )


class AlertDeliveryError(Exception):
    """Alertmanager did not take the alerts: the caller keeps them (a durable outbox) and retries."""

    def __init__(self, url: str, status: int | None, detail: str) -> None:
        self.url = url
        self.status = status  # the HTTP status, or None when no answer came (refused, timed out)
        self.detail = detail
        said = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"alerts not delivered to {url}: {said}: {detail}")


class AlertmanagerClient:
    """POSTs alerts to one Alertmanager's API v2; stdlib only, one request per call, no retries of its own."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Alertmanager URL must be http(s)://host[:port][/prefix], got {url!r}")
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/api/v2/alerts"
        self.timeout = timeout

    def post(self, alerts: Sequence[Alert]) -> None:
        """Send the alerts in one request; AlertDeliveryError unless Alertmanager answered 2xx."""
        if not alerts:
            return
        body = json.dumps([alert.to_json() for alert in alerts]).encode()
        request = urllib.request.Request(
            self.endpoint, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise AlertDeliveryError(self.endpoint, error.code, _answer(error)) from error
        except urllib.error.URLError as error:
            raise AlertDeliveryError(self.endpoint, None, str(error.reason)) from error
        except (OSError, http.client.HTTPException) as error:
            raise AlertDeliveryError(self.endpoint, None, f"{type(error).__name__}: {error}") from error


def _answer(error: urllib.error.HTTPError) -> str:
    """What Alertmanager said about a refused request, cut short (it names the bad field)."""
    try:
        text = error.read().decode(errors="replace").strip()
    except OSError:
        text = ""
    return (text or error.reason or "")[:_DETAIL_LIMIT]
