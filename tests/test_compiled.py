"""The compiled core (mypyc, setup.py) decides exactly as the interpreted .py files it is built from.

The interpreted side runs in a subprocess over a copy of engine/ without the compiled modules;
both replay every scenario under several profiles, and each side continues the other's sealed
states (replicas of both builds share Redis and checkpoints).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import compiled

ROOT = Path(__file__).resolve().parent.parent

# Run by both builds: decisions of every scenario (first half, then the rest from states that may
# come from the other build, as sealed blobs of engine/state), and the sealed states at the half.
REPLAY = r"""
import json, sys
from pathlib import Path
import engine.pipeline
from engine.contract import parse_snapshot
from engine.pipeline import Engine, Evaluator
from engine.policy import load_effective
from engine.state import REDIS, StateCodec

root, mode, states_in, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
assert engine.pipeline.__file__.endswith(".py") == (mode == "interpreted"), engine.pipeline.__file__
given = json.loads(Path(states_in).read_text()) if states_in != "-" else {}
result = {"decisions": {}, "states": {}}
for profile in ("balanced", "conservative", "aggressive"):
    policy = load_effective([str(root / "policies")], profile=profile)
    codec = StateCodec(policy, b"k" * 32)
    for path in sorted((root / "scenarios").glob("*.jsonl")):
        rows = [parse_snapshot(json.loads(line)) for line in path.read_text().splitlines()]
        key, half = f"{profile}/{path.stem}", len(rows) // 2
        evaluator = Evaluator(policy)
        evaluator.engine = Engine.of(policy, remembered=0)  # as the service keeps its states
        decided = [evaluator.evaluate(row).to_dict() for row in rows[:half]]
        result["states"][key] = {t: codec.dump(REDIS, t, half, s).hex() for t, s in evaluator.tests.items()}
        if key in given:
            evaluator.tests = {t: codec.load(REDIS, t, half, bytes.fromhex(b)) for t, b in given[key].items()}
        decided += [evaluator.evaluate(row).to_dict() for row in rows[half:]]
        result["decisions"][key] = decided
Path(out).write_text(json.dumps(result))
"""


def _interpreted_copy(target: Path) -> Path:
    """engine/ with its .py files (generated gRPC code included) and nothing compiled."""
    shutil.copytree(ROOT / "engine", target / "engine", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return target


def _replay(python_path: Path, mode: str, states: dict[str, Any] | None, work: Path) -> dict[str, Any]:
    given = work / f"{mode}-in.json"
    out = work / f"{mode}-out.json"
    if states is not None:
        given.write_text(json.dumps(states))
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    argv = [sys.executable, "-c", REPLAY, str(ROOT), mode, str(given) if states is not None else "-", str(out)]
    subprocess.run(argv, env=env, check=True, cwd=work, timeout=300)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    if not compiled.is_compiled():
        pytest.skip("the core is not compiled here (`make install` builds it): nothing to compare")
    work = tmp_path_factory.mktemp("compiled")
    pure = _interpreted_copy(work / "pure")
    first_compiled = _replay(ROOT, "compiled", None, work)
    interpreted = _replay(pure, "interpreted", first_compiled["states"], work)
    again_compiled = _replay(ROOT, "compiled", interpreted["states"], work)
    return interpreted, again_compiled


def test_ci_runs_the_compiled_core() -> None:
    """CI builds and tests the compiled core, as the Dockerfile ships it; a lost build would go unnoticed."""
    if not os.environ.get("ABGUARD_REQUIRE_COMPILED"):
        pytest.skip("ABGUARD_REQUIRE_COMPILED is not set (CI sets it)")
    assert compiled.is_compiled(), "engine.pipeline is interpreted: `make install` did not build the core"
    assert compiled.stale() == []


def test_compiled_and_interpreted_decide_alike_and_continue_each_others_states(
    builds: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    interpreted, compiled_run = builds
    assert interpreted["decisions"].keys() == compiled_run["decisions"].keys()
    assert len(interpreted["decisions"]) == 3 * len(list((ROOT / "scenarios").glob("*.jsonl")))
    for key, want in interpreted["decisions"].items():
        got = compiled_run["decisions"][key]
        assert len(got) == len(want) > 0
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True), f"{key} decision {index}"
    actions = {d["action"] for decided in interpreted["decisions"].values() for d in decided}
    assert {"continue", "rollback"} <= actions  # the scenarios reach both ends of the scale
