"""Properties of the engine's layout that a newcomer relies on: the fact catalog is what the engine
emits, the decision is declared once, and a failing condition is an `error`, never `ok`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from engine.api.convert import fill, to_dict
from engine.api.v1 import risk_pb2 as pb
from engine.contract import (
    Action,
    ConditionResult,
    ConditionStatus,
    Decision,
    IndicatorResult,
    NamedAction,
    PolicyRef,
    RiskLevel,
    TestStatus,
    parse_snapshot,
)
from engine.facts import DETECTORS, MODULES, emitted_facts, sequential_plan
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.policy.catalog import FACTS, SEQUENTIAL
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])


def test_the_catalog_lists_exactly_the_facts_the_engine_emits() -> None:
    """Every catalog fact is one a condition module declares, and every declared fact is in the catalog."""
    assert set(FACTS) == emitted_facts()


def test_the_catalogs_sequential_statistics_are_the_detectors_the_modules_offer() -> None:
    """Validation reads the catalog (stem, condition, thresholds); the engine runs the modules'
    detectors: the two lists are one."""
    offered = {
        (f"{MODULES[condition].PREFIX}.{spec.name}", condition, spec.needs)
        for condition, specs in DETECTORS.items()
        for spec in specs
    }
    assert offered == {(s.stem, s.condition, s.thresholds) for s in SEQUENTIAL}
    assert (
        {p.stem for p in sequential_plan(POLICY)} == set(POLICY.statistics.sequential) == {s.stem for s in SEQUENTIAL}
    )


def test_every_declared_fact_is_emitted_by_some_stream() -> None:
    """The bundled scenarios and a four-tier cache emit every declared fact at least once, and nothing undeclared."""
    tiers = {tier: {"hits": 90, "misses": 10} for tier in ("l1", "l2", "l3", "l4")}
    rows = [snapshot("tiers", step, cache={**tiers, "evictions": 1, "entries": 10}) for step in range(5)]
    for step in range(5):  # both arms below the accuracy floor: shared_degradation, not a cut
        row = snapshot("shared", step, correct=int(6000 * 0.7))
        row["champion"]["correct"] = int(54_000 * 0.7)  # type: ignore[index]
        rows.append(row)
    for path in sorted((ROOT / "scenarios").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    seen: set[str] = set()
    evaluator = Evaluator(POLICY)
    for row in rows:
        parsed = parse_snapshot(row)
        evaluator.evaluate(parsed)
        seen |= set(evaluator.state(parsed.test_id).windows.read(parsed, POLICY).facts)
    assert seen <= emitted_facts()
    assert emitted_facts() - seen == set()


@pytest.mark.parametrize(
    ("dataclass", "message"),
    [
        pytest.param(Decision, pb.Decision, id="Decision"),
        pytest.param(ConditionResult, pb.Condition, id="Condition"),
        pytest.param(IndicatorResult, pb.Indicator, id="Indicator"),
        pytest.param(NamedAction, pb.NamedAction, id="NamedAction"),
        pytest.param(PolicyRef, pb.PolicyRef, id="PolicyRef"),
    ],
)
def test_the_proto_mirrors_the_contract_field_for_field(dataclass: type, message: Any) -> None:
    """The gRPC message has exactly the dataclass's fields, in the same order."""
    assert [f.name for f in dataclasses.fields(dataclass)] == [f.name for f in message.DESCRIPTOR.fields]


@pytest.mark.parametrize(
    ("enum", "proto"),
    [
        pytest.param(Action, pb.Action, id="Action"),
        pytest.param(RiskLevel, pb.RiskLevel, id="RiskLevel"),
        pytest.param(ConditionStatus, pb.ConditionStatus, id="ConditionStatus"),
        pytest.param(TestStatus, pb.TestStatus, id="TestStatus"),
    ],
)
def test_closed_words_are_the_proto_enums(enum: Any, proto: Any) -> None:
    """Each contract word has its proto enum value, and the proto has no other (but UNSPECIFIED)."""
    prefix = proto.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    names = [v.name for v in proto.DESCRIPTOR.values if not v.name.endswith("_UNSPECIFIED")]
    assert names == [prefix + member.value.upper() for member in enum]


def test_a_decision_survives_the_wire_unchanged() -> None:
    """Decision -> proto -> dict gives the same data as Decision.to_dict: one shape everywhere."""
    evaluator = Evaluator(POLICY)
    for path in ("error_storm", "latency_spike"):
        for line in (ROOT / "scenarios" / f"{path}.jsonl").read_text().splitlines():
            decision = evaluator.evaluate(parse_snapshot(json.loads(line))).to_dict()
            assert to_dict(fill(pb.Decision(), decision)) == json.loads(json.dumps(decision))


def test_a_failing_condition_is_error_and_the_others_still_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault inside one condition's facts makes that condition `error` (with why) and asks for monitoring."""
    cache_window = MODULES["cache_performance"].CacheWindow

    def broken(self: Any, s: Any, condition: Any) -> Any:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(cache_window, "read", broken)
    evaluator = Evaluator(POLICY)
    decisions = [evaluator.evaluate(parse_snapshot(snapshot(step=step))) for step in range(25)]
    last = decisions[-1]
    statuses = {c.name: c.status for c in last.conditions}
    assert statuses["cache_performance"] == "error"
    assert statuses["accuracy"] == "ok"
    cache = next(c for c in last.conditions if c.name == "cache_performance")
    assert cache.error == "ZeroDivisionError: float division by zero"
    assert last.action == "increase_monitoring"
    assert last.triggered_by == "condition_error"
    assert "error in cache_performance: ZeroDivisionError" in last.reason


def test_a_condition_whose_add_fails_keeps_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a condition cannot take a snapshot, it reports `error` and its window stays as it was."""
    accuracy_window = MODULES["accuracy"].AccuracyWindow
    original = accuracy_window.add
    evaluator = Evaluator(POLICY)
    evaluator.evaluate(parse_snapshot(snapshot(step=0)))

    def failing(self: Any, s: Any) -> Any:
        raise OverflowError("boom")

    monkeypatch.setattr(accuracy_window, "add", failing)
    failed = evaluator.evaluate(parse_snapshot(snapshot(step=1)))
    assert next(c for c in failed.conditions if c.name == "accuracy").status == "error"
    monkeypatch.setattr(accuracy_window, "add", original)
    after = evaluator.evaluate(parse_snapshot(snapshot(step=2)))
    assert next(c for c in after.conditions if c.name == "accuracy").samples == 2 * 6000


def test_a_critical_condition_reports_critical_risk() -> None:
    """An immediate rollback for a critical condition says risk level critical, whatever the weighted score."""
    evaluator = Evaluator(POLICY)
    lines = (ROOT / "scenarios" / "accuracy_regression.jsonl").read_text().splitlines()
    decisions = [evaluator.evaluate(parse_snapshot(json.loads(line))) for line in lines]
    first = next(d for d in decisions if d.action == "immediate_rollback")
    assert first.risk_score < 0.8
    assert first.risk_level == "critical"


def test_an_undeclared_fact_is_that_conditions_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that emits a fact it did not declare fails its own condition, not the evaluation."""
    throughput = MODULES["throughput"]
    original = throughput.ThroughputWindow.read

    def leaky(self: Any, s: Any, condition: Any) -> Any:
        reading = original(self, s, condition)
        reading.facts["bogus"] = 1.0
        return reading

    monkeypatch.setattr(throughput.ThroughputWindow, "read", leaky)
    evaluator = Evaluator(POLICY)
    decision = [evaluator.evaluate(parse_snapshot(snapshot(step=step))) for step in range(12)][-1]
    statuses = {c.name: c.status for c in decision.conditions}
    assert statuses["throughput"] == "error"
    assert statuses["latency"] == "ok"
    assert "KeyError" in next(c.error for c in decision.conditions if c.name == "throughput")


def test_a_snapshot_message_reads_back_as_what_the_sender_set() -> None:
    """present() of a Snapshot gives the JSON the gateway sent: set zeros kept, unset blocks absent."""
    from google.protobuf import json_format

    from engine.api.convert import present

    for path in sorted((ROOT / "scenarios").glob("*.jsonl")):
        for line in path.read_text().splitlines()[:5]:
            assert present(json_format.Parse(line, pb.Snapshot())) == json.loads(line)
    sparse = pb.Snapshot(test_id="t")
    sparse.champion.requests = 0
    sparse.challenger.errors.SetInParent()
    assert present(sparse) == {"test_id": "t", "champion": {"requests": 0}, "challenger": {"errors": {}}}
