"""Properties of the decision pipeline that must hold for any policy numbers."""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.contract import Action, Snapshot, parse_snapshot
from engine.pipeline import Evaluator
from engine.policy import Policy, load_effective
from engine.rules.durable_adapter import CompiledRuleset
from engine.rules.registry import register

ROOT = Path(__file__).resolve().parent.parent
STREAMS = ("sustained_medium_risk", "confidence_drift", "sparse_labels")


@cache
def base() -> tuple[Policy, CompiledRuleset, dict[str, list[Snapshot]]]:
    policy = load_effective([str(ROOT / "policies")])
    streams = {
        name: [
            parse_snapshot(json.loads(line)) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()
        ]
        for name in STREAMS
    }
    return policy, register(policy), streams


def with_severity(policy: Policy, indicator_id: str, severity: float) -> Policy:
    conditions = []
    for condition in policy.conditions:
        indicators = tuple(
            dataclasses.replace(i, severity=severity) if i.id == indicator_id else i for i in condition.indicators
        )
        conditions.append(dataclasses.replace(condition, indicators=indicators))
    return dataclasses.replace(policy, conditions=tuple(conditions))


def actions(policy: Policy, ruleset: CompiledRuleset, snapshots: list[Snapshot]) -> list[Action]:
    evaluator = Evaluator(policy, ruleset)
    return [evaluator.evaluate(snapshot).action for snapshot in snapshots]


@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_raising_a_severity_never_gives_a_milder_action(data: st.DataObject) -> None:
    """For every snapshot, raising one indicator's severity gives the same or a stronger action."""
    policy, ruleset, streams = base()
    indicator = data.draw(st.sampled_from(policy.indicators), label="indicator")
    raised = data.draw(st.floats(indicator.severity, 1.0), label="new severity")
    stream = data.draw(st.sampled_from(STREAMS), label="stream")
    before = actions(policy, ruleset, streams[stream])
    after = actions(with_severity(policy, indicator.id, raised), ruleset, streams[stream])
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        assert new.rank >= old.rank, f"snapshot {index}: {old} became {new} after raising {indicator.id}"
