"""Labels as they really arrive (issue 26): late, in bursts, separately for each arm. Every label counts
whichever snapshot carries it, the decision says how old each arm's labels are, and labels that stop
make accuracy inconclusive, with the reason and an alert, instead of judging old evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from engine.api.convert import present
from engine.api.v1 import risk_pb2 as pb
from engine.contract import Action, ConditionStatus, InputError, format_time, parse_snapshot
from engine.facts.accuracy import RelativeDrop
from engine.facts.sequential import Detector, relative_settings
from engine.integrations.alertmanager import INCONCLUSIVE_ALERT, alerts_for
from engine.metrics import Metrics
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.service import Guard
from engine.stats.sequential import Boundary
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
START = 1_795_510_800.0  # 2026-11-24T09:00:00Z, as tests.conftest.snapshot


def test_labels_until_is_an_optional_time_no_later_than_the_snapshot() -> None:
    row = snapshot(step=3)
    row["challenger"]["labels_until"] = "2026-11-24T08:45:00Z"  # type: ignore[index]
    assert parse_snapshot(row).challenger.labels_until == START - 900
    row["challenger"]["labels_until"] = "2026-11-24T10:00:00Z"  # type: ignore[index]
    row["champion"]["labels_until"] = "yesterday"  # type: ignore[index]
    with pytest.raises(InputError) as refused:
        parse_snapshot(row)
    fields = {v.field for v in refused.value.violations}
    assert fields == {"champion.labels_until", "challenger.labels_until"}  # every bad field at once


def test_labels_until_travels_over_grpc_by_name() -> None:
    arm = pb.ArmMetrics(requests=10, labeled=2, correct=1, labels_until="2026-11-24T08:45:00Z")
    assert present(arm)["labels_until"] == "2026-11-24T08:45:00Z"
    assert "labels_until" not in present(pb.ArmMetrics(requests=10))


def test_labels_of_each_arm_count_in_whichever_snapshot_carries_them() -> None:
    """The champion's labels in even snapshots, the challenger's in odd ones (never together): a 12%
    drop is found, where a detector that needed both in one snapshot saw nothing."""
    drop = Detector.start(RelativeDrop(relative_settings(0.05, Boundary(15.0), 30.0, worse_is_lower=True)))
    for step in range(40):
        row = snapshot(step=step)
        labeled = {"labeled": 400, "correct": 352} if step % 2 == 0 else {"labeled": 0, "correct": 0}
        theirs = {"labeled": 400, "correct": int(400 * 0.88 * 0.88)} if step % 2 else {"labeled": 0, "correct": 0}
        row["champion"].update(labeled)  # type: ignore[attr-defined]
        row["challenger"].update(theirs)  # type: ignore[attr-defined]
        drop = drop.add(parse_snapshot(row))
    assert any(run.alarm for run in drop.runs)


def burst_stream(steps: int, every: int, accuracy: float) -> list[dict[str, Any]]:
    """Each arm's labels in one burst every `every` snapshots (the challenger's half a period after
    the champion's), each burst the labels of the snapshots since the last, the challenger at
    `accuracy` x the champion's 0.95."""
    rows = []
    for step in range(steps):
        row = snapshot(step=step)
        for arm, offset, share in (("champion", 0, 0.95), ("challenger", every // 2, 0.95 * accuracy)):
            burst = step % every == offset and step >= every
            labeled = 200 * every if burst else 0
            row[arm]["labeled"], row[arm]["correct"] = labeled, round(labeled * share)  # type: ignore[index]
        rows.append(row)
    return rows


def test_a_cut_back_holds_between_bursts_of_labels() -> None:
    """Bursts 20 minutes apart (the accuracy window is 15 min): between them the window holds no
    label, and the condition judges each arm's latest burst instead of falling silent while its
    drop alarm stands, which turned a cut-back back into `continue` until the next burst."""
    evaluator = Evaluator(POLICY)
    decisions = [evaluator.evaluate(parse_snapshot(row)) for row in burst_stream(480, 40, 0.85)]
    first = next(i for i, d in enumerate(decisions) if d.action.rank >= Action.REDUCE_ROLLOUT.rank)
    later = decisions[first:]
    assert all(d.action.rank >= Action.REDUCE_ROLLOUT.rank for d in later), [d.action for d in later]
    accuracy = [next(c for c in d.conditions if c.name == "accuracy") for d in later]
    assert all(c.status != ConditionStatus.INCONCLUSIVE for c in accuracy)


def test_bursts_of_labels_on_healthy_arms_keep_accuracy_judged_and_quiet() -> None:
    evaluator = Evaluator(POLICY)
    decisions = [evaluator.evaluate(parse_snapshot(row)) for row in burst_stream(480, 40, 1.0)]
    judged = [next(c for c in d.conditions if c.name == "accuracy") for d in decisions[80:]]
    assert all(c.status == ConditionStatus.OK for c in judged), {c.status for c in judged}
    assert all(d.action == Action.CONTINUE for d in decisions[80:])


def stale_stream(steps: int, stop: int) -> list[dict[str, Any]]:
    """Both arms labeled until `stop`, then no label at all (the label pipeline stopped)."""
    rows = []
    for step in range(steps):
        row = snapshot(step=step, interval=60)
        if step >= stop:
            for arm in ("champion", "challenger"):
                row[arm]["labeled"] = 0  # type: ignore[index]
                row[arm]["correct"] = 0  # type: ignore[index]
        rows.append(row)
    return rows


def test_labels_that_stop_make_accuracy_inconclusive_with_the_reason_and_an_alert() -> None:
    evaluator = Evaluator(POLICY)
    decisions = [evaluator.evaluate(parse_snapshot(row)) for row in stale_stream(100, 20)]
    fresh, stale = decisions[18], decisions[-1]
    assert fresh.label_lag_seconds == {"champion": 0.0, "challenger": 0.0}
    assert stale.label_lag_seconds == {"champion": 80 * 60.0, "challenger": 80 * 60.0}
    accuracy = next(c for c in stale.conditions if c.name == "accuracy")
    assert accuracy.status == ConditionStatus.INCONCLUSIVE
    assert accuracy.note.startswith("labels stopped: the champion's labels cover predictions only up to 80 min ago")
    assert "the policy allows 60 min" in accuracy.note
    assert f"accuracy inconclusive: {accuracy.note}" in stale.reason
    update = alerts_for(stale, set())
    (alert,) = [a for a in update.fire if a.alertname == INCONCLUSIVE_ALERT]
    assert (alert.condition, alert.severity.value) == ("accuracy", "warning")
    assert accuracy.note in alert.description
    # the first decision past the allowed lag
    first = next(d for d in decisions if any(c.note for c in d.conditions))
    assert first.label_lag_seconds is not None and (first.label_lag_seconds["challenger"] or 0.0) > 3600


def test_the_label_lag_is_a_decision_field_and_a_gauge(tmp_path: Path) -> None:
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    metrics = Metrics(guard)
    row = snapshot("lagging", step=5)
    row["challenger"]["labels_until"] = format_time(START + 6 * 30 - 1200)  # type: ignore[index]
    decided = guard.evaluate(row)
    guard.close()
    assert decided["label_lag_seconds"] == {"champion": 0.0, "challenger": 1200.0}
    text = generate_latest(metrics.registry).decode()
    assert 'abguard_label_lag_seconds{arm="challenger",test_id="lagging"} 1200.0' in text
