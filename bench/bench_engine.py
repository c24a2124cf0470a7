"""Engine benchmark: replay throughput of the default policy beside the floor, in one run.

The floor does the least any evaluation must: parse the JSON line, flatten the snapshot,
one durable_rules assert of those numbers (only the catch-all matches), write a line.
The engine does what `abguard replay` does per line. Both read and write JSON with
orjson, as replay does. Both run over the same interleaved
input (the bundled scenarios, several copies of each as separate tests); each is timed
REPEATS times and the best pass is kept, so a busy neighbour does not decide the ratio.

    make bench            # or: .venv/bin/python bench/bench_engine.py
"""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import pickle
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.cli.render import to_json  # noqa: E402
from engine.contract import parse_snapshot  # noqa: E402
from engine.pipeline import Engine, Evaluator  # noqa: E402
from engine.policy import load_effective  # noqa: E402
from engine.rules.registry import register  # noqa: E402

COPIES = 4
REPEATS = 3
GOAL = 1.0  # issue 11: the engine at least as fast as the floor


def build_input() -> list[str]:
    """Scenario lines, COPIES tests per scenario, interleaved by timestamp as a gateway sends them."""
    rows: list[tuple[str, int, str]] = []
    for path in sorted((ROOT / "scenarios").glob("*.jsonl")):
        for copy in range(COPIES):
            for index, line in enumerate(path.read_text().splitlines()):
                data = json.loads(line)
                data["test_id"] = f"{data['test_id']}-{copy}"
                rows.append((data["timestamp"], index, json.dumps(data, separators=(",", ":"))))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [line for _, _, line in rows]


def flatten(value: Any, prefix: str, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else key, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            flatten(item, f"{prefix}.{index}", out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = value


def timed(lines: list[str], step: Callable[[str, io.StringIO], None]) -> list[int]:
    out = io.StringIO()
    times = []
    gc.collect()
    for line in lines:
        start = time.perf_counter_ns()
        step(line, out)
        times.append(time.perf_counter_ns() - start)
    return times


def summary(times: list[int]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "evals_per_s": len(times) / (sum(times) / 1e9),
        "p50_us": statistics.median(ordered) / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99) - 1] / 1000,
    }


def state_bytes(policy: Any) -> tuple[int, int]:
    """Windows' buffer bytes and pickled bytes of one test after 24 h of 30 s snapshots."""
    template = json.loads((ROOT / "scenarios" / "healthy.jsonl").read_text().splitlines()[0])
    windows = Evaluator(policy).state(template["test_id"]).windows
    snapshot = parse_snapshot(template)
    for step in range(24 * 120):
        windows = windows.add(dataclasses.replace(snapshot, timestamp=snapshot.timestamp + 30 * step))
    return windows.nbytes, len(pickle.dumps(windows))


def live_bytes(policy: Any, copies: int = 1000) -> float:
    """Python heap per test of a whole test state (windows, statistics, history) after 24 h of 30 s
    snapshots through the full step: `copies` independent copies held at once, measured by tracemalloc."""
    rows = [json.loads(line) for line in (ROOT / "scenarios" / "healthy.jsonl").read_text().splitlines()]
    evaluator = Evaluator(policy)
    evaluator.engine = Engine.of(policy, evaluator.engine.ruleset, remembered=0)  # as the service holds a test
    first = parse_snapshot(rows[0])
    for step in range(24 * 120):
        row = parse_snapshot(rows[step % len(rows)])
        evaluator.evaluate(dataclasses.replace(row, timestamp=first.timestamp + 30 * step))
    blob = pickle.dumps(evaluator.state(first.test_id), protocol=pickle.HIGHEST_PROTOCOL)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [pickle.loads(blob) for _ in range(copies)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del held
    return used / copies


def main() -> int:
    policy = load_effective([str(ROOT / "policies")])
    lines = build_input()
    floor_rules = register(policy)

    def floor(line: str, out: io.StringIO) -> None:
        data = orjson.loads(line)
        flat: dict[str, float] = {}
        flatten(data, "", flat)
        floor_rules.fire(flat)
        out.write(orjson.dumps({"test_id": data["test_id"], "timestamp": data["timestamp"]}).decode() + "\n")

    best: dict[str, list[int]] = {}
    for _ in range(REPEATS):
        evaluator = Evaluator(policy, floor_rules)

        def engine(line: str, out: io.StringIO, evaluator: Evaluator = evaluator) -> None:
            out.write(to_json(evaluator.evaluate(parse_snapshot(orjson.loads(line)))) + "\n")

        for name, step in (("floor", floor), ("engine", engine)):
            times = timed(lines, step)
            if name not in best or sum(times) < sum(best[name]):
                best[name] = times

    floor_stats, engine_stats = summary(best["floor"]), summary(best["engine"])
    ratio = engine_stats["evals_per_s"] / floor_stats["evals_per_s"]
    buffers, pickled = state_bytes(policy)
    tests = len({json.loads(line)["test_id"] for line in lines})
    print(f"engine benchmark: {len(lines)} snapshots of {tests} interleaved tests, best of {REPEATS} passes")
    print(f"{'':8}{'evals/s':>10}{'p50 us':>10}{'p99 us':>10}")
    for name, stats in (("floor", floor_stats), ("engine", engine_stats)):
        print(f"{name:8}{stats['evals_per_s']:>10.0f}{stats['p50_us']:>10.1f}{stats['p99_us']:>10.1f}")
    verdict = "meets" if ratio >= GOAL else "misses"
    print(f"ratio engine/floor throughput: {ratio:.2f} ({verdict} the {GOAL}x goal)")
    print(f"state per test after 24 h of 30 s snapshots: {buffers} bytes of window buffers, {pickled} bytes pickled")
    per_test = live_bytes(policy)
    print(
        f"live memory per test after 24 h: {per_test / 1024:.1f} KiB (goal <= 64 KiB); 10,000 such tests:"
        f" {per_test * 10_000 / 2**20:.0f} MiB (goal < 1024 MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
