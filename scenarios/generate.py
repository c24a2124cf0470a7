"""Writes the bundled scenario streams (JSON lines, 30 s snapshots) deterministically.

    python scenarios/generate.py            # rewrites scenarios/*.jsonl

Each stream is a realistic serving test: ~40k requests/s over both arms, the challenger at
10% of the traffic, a few percent of predictions labeled, latency histograms in ms,
confidence histograms, errors, retries, four cache tiers. A scenario changes the
challenger from some minute on; everything else stays healthy.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
INTERVAL = 30
BOUNDS = [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 25.0]
HEALTHY_CONFIDENCE = [0.01, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.18, 0.24, 0.26]
DRIFTED_CONFIDENCE = [0.10, 0.14, 0.16, 0.16, 0.14, 0.10, 0.08, 0.06, 0.04, 0.02]
CLUSTERED_CONFIDENCE = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.01, 0.04, 0.95]


@dataclass
class Arm:
    """What one arm looks like during an interval."""

    rps: float
    label_share: float = 0.05
    accuracy: float = 0.90
    latency_median_ms: float = 1.1
    latency_spread: float = 0.28
    confidence: list[float] = field(default_factory=lambda: list(HEALTHY_CONFIDENCE))
    error_rate: float = 0.004
    retry_failure: float = 0.05
    hit_rate: float = 0.993
    cache_ms: float = 1.4
    duplicate_rate: float = 0.01
    cpu: float = 0.45
    queue: int = 8


def arm_metrics(rng: np.random.Generator, arm: Arm) -> dict[str, Any]:
    requests = int(rng.poisson(arm.rps * INTERVAL))
    labeled = int(rng.binomial(requests, arm.label_share))
    latencies = rng.lognormal(np.log(arm.latency_median_ms), arm.latency_spread, size=4000)
    counts = np.histogram(latencies, bins=[0.0, *BOUNDS, np.inf])[0]
    scaled = np.round(counts / counts.sum() * requests).astype(int).tolist()
    errors_total = int(rng.binomial(requests, arm.error_rate))
    split = rng.multinomial(errors_total, [0.5, 0.1, 0.3, 0.1]).tolist()
    lookups = requests * 2  # L1 misses fall through to L2; L2 misses go to the database
    l1_hits = int(rng.binomial(lookups, 0.6))
    l2_lookups = lookups - l1_hits
    l2_misses = min(l2_lookups, int(rng.binomial(lookups, 1 - arm.hit_rate)))
    attempted = max(1, int(errors_total * 0.8))
    return {
        "requests": requests,
        "labeled": labeled,
        "correct": int(rng.binomial(labeled, arm.accuracy)),
        "latency_ms": {"bounds": BOUNDS, "counts": scaled},
        "confidence_histogram": rng.multinomial(max(1, requests // 10), arm.confidence).tolist(),
        "errors": dict(zip(("extraction", "serialization", "timeout", "cache"), split, strict=True)),
        "retries": {"attempted": attempted, "failed": int(rng.binomial(attempted, arm.retry_failure))},
        "cache": {
            "l1": {"hits": l1_hits, "misses": l2_lookups},
            "l2": {"hits": l2_lookups - l2_misses, "misses": l2_misses},
            "evictions": int(rng.poisson(40)),
            "entries": 10000,
            "response_time_ms": round(float(rng.normal(arm.cache_ms, 0.05)), 3),
        },
        "concurrent_requests": int(arm.rps * arm.latency_median_ms / 1000 * 4) + int(rng.integers(0, 20)),
        "queue_depth": arm.queue + int(rng.integers(0, 5)),
        "cpu_utilization": round(min(1.0, float(rng.normal(arm.cpu, 0.02))), 3),
        "memory_utilization": round(float(rng.normal(0.55, 0.01)), 3),
        "duplicate_entity_rate": round(max(0.0, float(rng.normal(arm.duplicate_rate, 0.001))), 4),
    }


Change = Callable[[int, Arm], None]  # (minute, challenger) -> mutate


def stream(
    test_id: str,
    minutes: int,
    change: Change | None = None,
    seed: int = 7,
    rollout: float = 10.0,
    champion_labels: float | None = None,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(minutes * 60 // INTERVAL):
        minute = step * INTERVAL // 60
        total_rps = 40000 * (1 + 0.03 * np.sin(step / 20))
        champion = Arm(rps=total_rps * (1 - rollout / 100))
        if champion_labels is not None:
            champion.label_share = champion_labels
        challenger = Arm(rps=total_rps * rollout / 100)
        if change:
            change(minute, challenger)
        moment = START + timedelta(seconds=INTERVAL * (step + 1))
        rows.append(
            {
                "test_id": test_id,
                "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "interval_seconds": INTERVAL,
                "rollout_percent": rollout,
                "champion": arm_metrics(rng, champion),
                "challenger": arm_metrics(rng, challenger),
            }
        )
    return rows


def after(start: int, **values: Any) -> Change:
    def apply(minute: int, arm: Arm) -> None:
        if minute >= start:
            for key, value in values.items():
                setattr(arm, key, value)

    return apply


def both(*changes: Change) -> Change:
    def apply(minute: int, arm: Arm) -> None:
        for change in changes:
            change(minute, arm)

    return apply


SCENARIOS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "healthy": lambda: stream("healthy", 40),
    "accuracy_regression": lambda: stream("accuracy-regression", 40, after(20, accuracy=0.74)),
    "latency_spike": lambda: stream("latency-spike", 30, after(15, latency_median_ms=4.0, latency_spread=0.5)),
    "error_storm": lambda: stream("error-storm", 30, after(15, error_rate=0.14, retry_failure=0.4)),
    "confidence_drift": lambda: stream("confidence-drift", 40, after(20, confidence=DRIFTED_CONFIDENCE)),
    "sparse_labels": lambda: stream("sparse-labels", 30, after(0, label_share=0.00002)),
    # every request labeled (~10^6 labels a snapshot): a 1% relative drop is highly significant
    # and practically irrelevant (the policy's threshold is 5%)
    "tiny_accuracy_drop": lambda: stream(
        "tiny-accuracy-drop", 40, both(after(0, label_share=1.0), after(0, accuracy=0.891)), champion_labels=1.0
    ),
    "sustained_medium_risk": lambda: stream(
        "sustained-medium-risk",
        45,
        both(
            after(10, accuracy=0.83, error_rate=0.06, hit_rate=0.975, duplicate_rate=0.08),
            after(10, latency_median_ms=2.2, latency_spread=0.25, cpu=0.85, queue=120, rps=2600),
        ),
    ),
}


def main(folder: Path) -> None:
    for name, build in SCENARIOS.items():
        with (folder / f"{name}.jsonl").open("w") as out:
            for row in build():
                out.write(json.dumps(row, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
