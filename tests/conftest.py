"""Shared fixtures: a private copy of the shipped policies for tests that break them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw new examples on every run here, so each run explores further; CI
# (ABGUARD_REQUIRE_SERVICES) draws the same examples every time, so a landing never depends on luck.
settings.register_profile("ci", derandomize=True)
if os.environ.get("ABGUARD_REQUIRE_SERVICES"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a compiled core older than its source: the tests would run the old code."""
    from engine.compiled import stale

    behind = stale()
    if behind:
        pytest.exit(f"compiled core older than its source ({', '.join(behind[:3])}...): run `make install`"
                    " to rebuild it, or `make pure` to test the interpreted core", returncode=2)  # fmt: skip


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of policies/ that a test may edit."""
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def snapshot(test_id: str = "t1", step: int = 0, interval: int = 30, **challenger: object) -> dict[str, object]:
    """A healthy snapshot dict at 09:00 + (step+1) x interval; keyword arguments override challenger fields."""
    seconds = 9 * 3600 + (step + 1) * interval
    stamp = f"2026-11-24T{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}Z"

    def arm(volume: int, **extra: object) -> dict[str, object]:
        body: dict[str, object] = {
            "requests": volume,
            "labeled": volume // 20,
            "correct": int(volume // 20 * 0.9),
            "latency_ms": {"p50": 1.0, "p95": 1.7, "p99": 2.5, "mean": 1.1},
            "confidence_histogram": [1, 1, 2, 3, 5, 8, 12, 18, 24, 26],
            "errors": {"extraction": volume // 500, "serialization": 0, "timeout": 0, "cache": 0},
            "retries": {"attempted": 10, "failed": 0},
            "cache": {
                "l1": {"hits": volume, "misses": volume // 200},
                "evictions": 5,
                "entries": 10000,
                "response_time_ms": 1.2,
            },
            "concurrent_requests": 100,
            "queue_depth": 5,
            "cpu_utilization": 0.4,
            "memory_utilization": 0.5,
            "duplicate_entity_rate": 0.01,
        }
        body.update(extra)
        return body

    return {
        "test_id": test_id,
        "timestamp": stamp,
        "interval_seconds": interval,
        "rollout_percent": 10,
        "champion": arm(1_080_000),
        "challenger": arm(120_000, **challenger),
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ABGUARD_REQUIRE_SERVICES set (CI), a skipped test fails the run: nothing may hide."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("ABGUARD_REQUIRE_SERVICES") and skipped:
        print(f"\nABGUARD_REQUIRE_SERVICES is set and {skipped} test(s) were skipped: failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
