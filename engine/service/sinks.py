"""The real systems behind the rollback outbox: a feature-flag provider and Alertmanager.

Outbox items are JSON, so alerts travel as their fields and are rebuilt before sending; a
flag is named from the test by the flags config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..contract import Decision, format_time
from ..integrations.alertmanager import ROLLBACK_ALERT, Alert, AlertKey, AlertmanagerClient, Severity, alerts_for
from ..integrations.flags import FlagProvider, FlagsConfig, build_provider, load_flags_config
from ..integrations.notify import RollbackWebhook
from ..policy.model import Policy
from ..rollback.process import Rollback
from ..store.rollbacks import RollbackRecords, RollbackStore
from .rollbacks import Rollbacks

NOTIFY_SECRET_ENV = "ABGUARD_NOTIFY_WEBHOOK_SECRET"  # the secret is never an argument: it would show in ps
OVERDUE_ALERT = "AbguardRollbackOverdue"
RECOVERY_ALERT = "AbguardPartialRecovery"
STATE_ALERT = "AbguardStateRejected"  # a stored state failed its seal or a check: someone wrote Redis or the database
STATE_ALERT_SECONDS = 3600.0  # it fires this long, then resolves by itself (endsAt): nothing later clears it


class Flags:
    """A flag provider and the config that names each test's flag."""

    def __init__(self, config: FlagsConfig, provider: FlagProvider) -> None:
        self.config = config
        self.provider = provider

    def flag_for(self, test_id: str) -> str:
        return self.config.flag_key(test_id)

    def roll_back(self, flag: str) -> None:
        self.provider.roll_back(flag)

    def set_rollout(self, flag: str, percent: float) -> None:
        self.provider.set_rollout(flag, percent)


class Alerts:
    """Alertmanager: the alerts of each decision, of a rollback, of a late phase or recovery."""

    def __init__(self, client: AlertmanagerClient, environment: str | None) -> None:
        self.client = client
        self.environment = environment

    def send(self, alerts: list[dict[str, Any]]) -> None:
        self.client.post([Alert(**{**fields, "severity": Severity(fields["severity"])}) for fields in alerts])

    def for_decision(self, decision: Decision, active: frozenset[Any]) -> tuple[list[dict[str, Any]], frozenset[Any]]:
        update = alerts_for(decision, {AlertKey(*key) for key in active}, environment=self.environment)
        return [_fields(alert) for alert in update.alerts], frozenset(update.active)

    def rollback(self, record: Rollback) -> list[dict[str, Any]]:
        """The alert of a rollback no decision alerted on: a manual one (condition `manual_rollback`)."""
        by = "" if record.requested_by == "abguard" else f", asked by {record.requested_by}"
        return [
            self._alert(
                ROLLBACK_ALERT, Severity.ROLLBACK, record, record.trigger,
                f"test {record.test_id} rolled back ({record.trigger}{by}): {record.reason}",
                f"rollback {record.rollback_id} opened; the gateway acknowledges its steps (GetRollback)",
                record.opened_at,
            )
        ]  # fmt: skip

    def overdue(self, record: Rollback, phase: str, now: float) -> list[dict[str, Any]]:
        if phase == "recovery":
            recovery = record.recovery
            score = f"{recovery.score:.2f}" if recovery is not None else "below 0.95"
            return [
                self._alert(
                    RECOVERY_ALERT, Severity.CRITICAL, record, "recovery",
                    f"test {record.test_id}: only a partial recovery after its rollback (score {score})",
                    f"rollback {record.rollback_id}: the service did not return to the champion's baseline",
                    now,
                )
            ]  # fmt: skip
        pending = [s.name for s in record.steps if s.spec.phase == phase and not s.state.final]
        return [
            self._alert(
                OVERDUE_ALERT, Severity.CRITICAL, record, phase,
                f"test {record.test_id}: rollback phase {phase} missed its deadline",
                f"rollback {record.rollback_id}: steps not done: {', '.join(pending) or 'none'}",
                now,
            )
        ]  # fmt: skip

    def state_rejected(self, test_id: str, where: str, why: str, now: float) -> list[dict[str, Any]]:
        """A stored state that was not used: a platform problem (who wrote it?), never the model's."""
        alert = Alert(
            alertname=STATE_ALERT,
            severity=Severity.CRITICAL,
            test_id=test_id,
            condition=f"state_{where}",
            summary=f"test {test_id}: its stored state in {where} was rejected and rebuilt from the decision log",
            decision_id="",
            description=f"{why}. The decisions are unchanged; something other than abguard wrote {where}.",
            starts_at=format_time(now),
            environment=self.environment,
            ends_at=format_time(now + STATE_ALERT_SECONDS),
        )
        return [_fields(alert)]

    def _alert(
        self, name: str, severity: Severity, record: Rollback, condition: str, summary: str, description: str, at: float
    ) -> dict[str, Any]:
        alert = Alert(
            alertname=name,
            severity=severity,
            test_id=record.test_id,
            condition=condition,
            summary=summary,
            decision_id=record.decision_id,
            description=description,
            starts_at=format_time(at),
            environment=self.environment,
        )
        return _fields(alert)


_ALERT_FIELDS = tuple(field.name for field in fields(Alert))


def _fields(alert: Alert) -> dict[str, Any]:
    """An alert as the outbox's JSON (dataclasses.asdict deep-copies, at a third of a decision's cost)."""
    return {name: getattr(alert, name) for name in _ALERT_FIELDS}


def build_rollbacks(
    data_dir: Path,
    flags_config: str | None,
    alertmanager_url: str | None,
    policy: Policy,
    on_event: Callable[[dict[str, Any]], None] | None,
    clock: Callable[[], float] | None = None,
    notify_url: str | None = None,
    notify_secret: str | None = None,
    store: RollbackRecords | None = None,
) -> Rollbacks:
    """The rollback records (`store`, or SQLite in the data folder), with the flag provider,
    Alertmanager and the signed rollback webhook configured (each optional)."""
    notify = None
    if notify_url:
        if not notify_secret:
            raise ValueError(f"--notify-webhook needs its signing secret in ${NOTIFY_SECRET_ENV}")
        notify = RollbackWebhook(notify_url, notify_secret)
    flags = None
    if flags_config:
        config = load_flags_config(flags_config)
        flags = Flags(config, build_provider(config))
    alerts = Alerts(AlertmanagerClient(alertmanager_url), policy.environment) if alertmanager_url else None
    if store is None:
        store = RollbackStore(data_dir / "rollbacks.sqlite3")
    return Rollbacks(store, clock or time.time, flags, alerts, on_event, notify)
