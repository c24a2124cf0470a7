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
import math
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
from engine.pipeline import Engine, Evaluator, TestState  # noqa: E402
from engine.policy import load_effective  # noqa: E402
from engine.rules.registry import register  # noqa: E402
from engine.state import REDIS, StateCodec  # noqa: E402

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


def day_long_state(policy: Any) -> TestState:
    """A whole test state (windows, statistics, history) after 24 h of 30 s snapshots through the full step."""
    rows = [json.loads(line) for line in (ROOT / "scenarios" / "healthy.jsonl").read_text().splitlines()]
    evaluator = Evaluator(policy)
    evaluator.engine = Engine.of(policy, evaluator.engine.ruleset, remembered=0)  # as the service holds a test
    first = parse_snapshot(rows[0])
    for step in range(24 * 120):
        row = parse_snapshot(rows[step % len(rows)])
        evaluator.evaluate(dataclasses.replace(row, timestamp=first.timestamp + 30 * step))
    return evaluator.state(first.test_id)


def live_bytes(codec: StateCodec, blob: bytes, copies: int = 1000) -> float:
    """Python heap per test of `copies` independent copies of the state held at once (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [codec.load(REDIS, "bench", 1, blob) for _ in range(copies)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del held
    return used / copies


def per_call_us(call: Any, repeats: int = 200) -> float:
    best = math.inf
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(repeats):
            call()
        best = min(best, (time.perf_counter_ns() - started) / repeats / 1000)
    return best


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
    state = day_long_state(policy)
    codec = StateCodec(policy, b"bench-key-of-32-bytes-----------")
    blob = codec.dump(REDIS, "bench", 1, state)
    dump_us = per_call_us(lambda: codec.dump(REDIS, "bench", 1, state))
    load_us = per_call_us(lambda: codec.load(REDIS, "bench", 1, blob))
    tests = len({json.loads(line)["test_id"] for line in lines})
    print(f"engine benchmark: {len(lines)} snapshots of {tests} interleaved tests, best of {REPEATS} passes")
    print(f"{'':8}{'evals/s':>10}{'p50 us':>10}{'p99 us':>10}")
    for name, stats in (("floor", floor_stats), ("engine", engine_stats)):
        print(f"{name:8}{stats['evals_per_s']:>10.0f}{stats['p50_us']:>10.1f}{stats['p99_us']:>10.1f}")
    verdict = "meets" if ratio >= GOAL else "misses"
    print(f"ratio engine/floor throughput: {ratio:.2f} ({verdict} the {GOAL}x goal)")
    print(
        f"state per test after 24 h of 30 s snapshots: {state.windows.nbytes} bytes of window buffers,"
        f" {len(blob)} bytes sealed (engine/state); writing it {dump_us:.0f} us, reading and checking it"
        f" {load_us:.0f} us ({load_us / engine_stats['p50_us']:.2f}x an evaluation's p50)"
    )
    per_test = live_bytes(codec, blob)
    print(
        f"live memory per test after 24 h: {per_test / 1024:.1f} KiB (goal <= 64 KiB); 10,000 such tests:"
        f" {per_test * 10_000 / 2**20:.0f} MiB (goal < 1024 MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
