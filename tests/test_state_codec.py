"""A test's state outside the process is data: it round-trips exactly, and whatever else is read is refused."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.contract import parse_snapshot
from engine.pipeline import Engine, Evaluator, TestState, step
from engine.policy import load_effective
from engine.state import CHECKPOINT, REDIS, CannotEncodeError, StateCodec, StateRejectedError
from engine.state.keys import StateKeyError, configured_key, parse_key
from engine.state.layout import KNOWN_FIELDS, check_covered, encode, layout_number
from fuzz.invariants import check_state_blob, state_seeds
from tests.support.hostile_states import hostile_blobs, ran

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])
KEY = bytes(range(32))
SCENARIOS = sorted((ROOT / "scenarios").glob("*.jsonl"))


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def states_along(path: Path, policy: Any = POLICY) -> list[tuple[str, TestState]]:
    """Every state a service would store while deciding this scenario."""
    evaluator = Evaluator(policy)
    evaluator.engine = Engine.of(policy, remembered=0)
    out = []
    for row in rows(path):
        evaluator.evaluate(parse_snapshot(row))
        out += list(evaluator.tests.items())
    return out


@pytest.mark.parametrize("profile", ["balanced", "conservative", "aggressive"])
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_state_of_every_scenario_round_trips_exactly(path: Path, profile: str) -> None:
    """What is read back is the state that was written, field for field, and decides the same next."""
    policy = load_effective([str(ROOT / "policies")], profile)
    codec = StateCodec(policy, KEY)
    engine = Engine.of(policy, remembered=0)
    snapshots = [parse_snapshot(row) for row in rows(path)]
    evaluator = Evaluator(policy)
    evaluator.engine = engine
    for index, snapshot in enumerate(snapshots):
        evaluator.evaluate(snapshot)
        test_id, state = next(iter(evaluator.tests.items()))
        back = codec.load(REDIS, test_id, index, codec.dump(REDIS, test_id, index, state))
        assert repr(back) == repr(state), f"{path.stem} snapshot {index}"  # repr: NaN (a missing metric) is NaN
        if index + 1 < len(snapshots):
            assert step(engine, back, snapshots[index + 1])[0] == step(engine, state, snapshots[index + 1])[0]


def test_the_layout_knows_every_field_of_the_state() -> None:
    """A field added to a state class without a layout change would be lost on the way to Redis."""
    assert check_covered() == []
    assert len(KNOWN_FIELDS) >= 16


def test_a_state_that_remembers_decisions_is_not_encoded() -> None:
    """An Evaluator's recent decisions are not part of the layout: refused, never silently dropped."""
    evaluator = Evaluator(POLICY)
    evaluator.evaluate(parse_snapshot(rows(SCENARIOS[0])[0]))
    with pytest.raises(CannotEncodeError):
        encode(next(iter(evaluator.tests.values())))


def hostile(tmp_path: Path, purpose: str = REDIS) -> tuple[dict[str, bytes], Path]:
    states = states_along(ROOT / "scenarios" / "latency_spike.jsonl")
    test_id, state = states[-1]
    codec = StateCodec(POLICY, KEY)
    other = codec.dump(purpose, "another-test", 40, state)
    earlier = codec.dump(purpose, test_id, 39, states[-2][1])
    marker = tmp_path / "pwned"
    return hostile_blobs(KEY, POLICY, purpose, test_id, 40, state, other, earlier, marker), marker


@pytest.mark.parametrize("purpose", [REDIS, CHECKPOINT])
def test_every_hostile_blob_is_rejected_with_a_reason_and_runs_no_code(tmp_path: Path, purpose: str) -> None:
    blobs, marker = hostile(tmp_path, purpose)
    codec = StateCodec(POLICY, KEY)
    reasons = {}
    for name, blob in blobs.items():
        with pytest.raises(StateRejectedError) as refused:
            codec.load(purpose, "latency-spike", 40, blob)
        reasons[name] = refused.value.why
    assert not ran(marker)
    assert "seal does not match" in reasons["crafted-pickle"] or "not a sealed state" in reasons["crafted-pickle"]
    assert "seal does not match" in reasons["another-tests-blob"]
    assert "seal does not match" in reasons["an-earlier-versions-blob"]
    assert "layout" in reasons["wrong-layout"]
    assert "last_interval" in reasons["nan"] and "finite" in reasons["nan"]
    assert "length" in reasons["huge-length"]
    assert "cuts" in reasons["negative-cut"]
    assert "negative" in reasons["negative-count"]
    assert "os.system" in reasons["unknown-indicator"]
    assert "left over" in reasons["trailing-bytes"]


def test_a_blob_sealed_for_a_checkpoint_is_not_a_shared_state_and_a_key_is_needed() -> None:
    """The seal binds the purpose, the policy and the key, not only the test and the version."""
    test_id, state = states_along(ROOT / "scenarios" / "healthy.jsonl")[-1]
    codec = StateCodec(POLICY, KEY)
    blob = codec.dump(CHECKPOINT, test_id, 7, state)
    assert codec.load(CHECKPOINT, test_id, 7, blob) == state
    conservative = load_effective([str(ROOT / "policies")], "conservative")
    for other, purpose in (
        (codec, REDIS),
        (StateCodec(POLICY, b"x" * 32), CHECKPOINT),
        (StateCodec(conservative, KEY), CHECKPOINT),
    ):
        with pytest.raises(StateRejectedError, match=r"seal does not match|layout"):  # another policy's shape
            other.load(purpose, test_id, 7, blob)


def test_a_configured_key_is_hex_of_32_bytes_or_more(tmp_path: Path) -> None:
    good = tmp_path / "key"
    good.write_text("ab" * 32 + "\n")
    assert configured_key(str(good)) == bytes([0xAB]) * 32
    assert configured_key(None, {"ABGUARD_STATE_KEY": "cd" * 40}) == bytes([0xCD]) * 40
    assert configured_key(None, {}) is None
    with pytest.raises(StateKeyError, match="at least 32"):
        parse_key("ab" * 16, "ABGUARD_STATE_KEY")
    with pytest.raises(StateKeyError, match="hex"):
        parse_key("not hex at all", "ABGUARD_STATE_KEY")
    with pytest.raises(StateKeyError, match="--state-key-file"):
        configured_key(str(tmp_path / "missing"))


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec"}
FORBIDDEN_ATTRIBUTES = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all")}


def forbidden(source: str, where: str) -> list[str]:
    """Each import of a deserialiser that builds objects by name, each eval/exec, each unsafe YAML load."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
            found += [f"{where}:{node.lineno} import {name}" for name in names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where}:{node.lineno} from {node.module} import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            found.append(f"{where}:{node.lineno} {node.func.id}()")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and ((node.value.id, node.attr) in FORBIDDEN_ATTRIBUTES)
        ):
            found.append(f"{where}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_nothing_in_the_engine_unpickles_or_evaluates_data() -> None:
    """Kept out for good: no module of engine/ imports pickle or marshal, evals, or loads YAML unsafely."""
    found = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        if "api/v1" not in path.as_posix():  # generated by protoc
            found += forbidden(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_scan_finds_what_it_forbids() -> None:
    """The scan above is not vacuous: each kind of finding is found."""
    source = "import pickle\nfrom marshal import loads\nvalue = eval('1')\nimport yaml\nyaml.load('a')\nexec('2')\n"
    assert sorted(line.split(" ", 1)[1] for line in forbidden(source, "m.py")) == [
        "eval()", "exec()", "from marshal import", "import pickle", "yaml.load",
    ]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_bodies_behind_a_valid_seal_are_refused_or_decide_without_crashing(data: st.DataObject) -> None:
    """Random changes to a state's bytes, sealed with the real key (a writer who can read the key):
    every one is refused with StateRejectedError or gives a state the engine can continue from."""
    body = bytearray(FUZZ_SEEDS[data.draw(st.integers(0, len(FUZZ_SEEDS) - 1), label="state")][1:])
    for _ in range(data.draw(st.integers(1, 6), label="changes")):
        at = data.draw(st.integers(0, max(0, len(body) - 1)), label="at")
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]), label="kind")
        if kind == "flip" and body:
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and body:
            body[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del body[at : at + data.draw(st.integers(1, 16))]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    check_state_blob(bytes(body), sealed=True)


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=512))
def test_random_bytes_in_redis_are_refused(blob: bytes) -> None:
    """Bytes not sealed with the key never decode, whatever they are."""
    check_state_blob(blob, sealed=False)


FUZZ_SEEDS = state_seeds()


def test_a_rollback_rule_without_a_trigger_name_still_round_trips() -> None:
    """A rule may leave out triggered_by: the history then holds a rollback time and no name (found in review)."""
    from dataclasses import replace

    from engine.verdict.status import TestHistory

    test_id, state = states_along(ROOT / "scenarios" / "healthy.jsonl")[-1]
    rolled = replace(state, history=TestHistory("2026-11-24T09:20:30Z", None, False), cuts={"rule:high_risk": 150.0})
    codec = StateCodec(POLICY, KEY)
    assert codec.load(REDIS, test_id, 3, codec.dump(REDIS, test_id, 3, rolled)) == rolled


def test_the_layout_id_follows_the_shape_the_code_gives_the_policy() -> None:
    """Another policy's state has another layout id when its detectors differ, the same when only the
    text differs in what no window holds; a blob of another layout is passed over by the guard."""
    conservative = StateCodec(load_effective([str(ROOT / "policies")], "conservative"), KEY)
    balanced = StateCodec(POLICY, KEY)
    assert conservative.layout != balanced.layout  # its floor (0.90) changes the floor detector's settings
    assert StateCodec(POLICY, b"y" * 32).layout == balanced.layout


def test_a_layout_number_fits_the_stores_signed_32_bit_column() -> None:
    """PostgreSQL keeps it as INTEGER: a layout whose hash had its top bit set failed every save."""
    numbers = [layout_number(f"layout {i}") for i in range(256)]
    assert all(0 <= n < 2**31 for n in numbers)
    assert len(set(numbers)) == len(numbers)
