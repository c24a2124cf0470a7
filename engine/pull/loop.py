"""Pull mode: every interval, each configured test's snapshot built from Prometheus (one instant
query per field, all at the same evaluation time) and evaluated through the Guard, as if the
gateway had sent it. A failed query or an evaluation the Guard refuses is an event, never the
end of the loop."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ..contract import format_time
from ..service import Guard
from .config import ARMS, COUNTS, PullConfig, PulledTest

Log = Callable[[dict[str, Any]], None]


class QueryError(RuntimeError):
    """Prometheus did not answer the query, or answered something that is not one number."""


class Prometheus:
    """Instant queries against Prometheus' HTTP API (GET /api/v1/query), stdlib only."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def value(self, query: str, at: float) -> float | None:
        """The query's one value at `at`; None when it returns no sample."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': query, 'time': f'{at:.3f}'})}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            with error:
                detail = error.read()[:300].decode("utf-8", "replace")
            raise QueryError(f"HTTP {error.code}: {detail}") from None
        except (OSError, ValueError) as error:
            raise QueryError(f"{type(error).__name__}: {error}") from None
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return _number(data["result"][1])
        samples = data["result"]
        if not samples:
            return None
        if len(samples) > 1:
            raise QueryError(f"{len(samples)} series, not one: aggregate them (sum, max...)")
        return _number(samples[0]["value"][1])


def _number(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None  # NaN or Inf: no value


def snapshot(
    config: PullConfig, source: Prometheus, test: PulledTest, at: float
) -> tuple[dict[str, Any] | None, list[str]]:
    """The test's snapshot at `at` (None without `requests`), and what could not be read."""
    problems: list[str] = []
    arms: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        fields: dict[str, Any] = {}
        for field in config.queries:
            try:
                value = source.value(config.query(field, test, arm), at)
            except QueryError as error:
                problems.append(f"{arm}.{field}: {error}")
                continue
            if value is not None:
                _put(fields, field, round(value) if field in COUNTS else value)
        if "requests" not in fields:
            return None, [*problems, f"{arm}.requests: no sample"]
        if "confidence_histogram" in fields:
            bins = fields["confidence_histogram"]
            fields["confidence_histogram"] = [bins.get(str(b), 0) for b in range(10)]
        arms[arm] = fields
    body: dict[str, Any] = {
        "test_id": test.test_id,
        "timestamp": format_time(at),
        "interval_seconds": config.interval,
        "champion": arms["champion"],
        "challenger": arms["challenger"],
    }
    if test.rollout_percent is not None:
        try:
            share = source.value(config.query("rollout_percent", test, None), at)
        except QueryError as error:
            problems.append(f"rollout_percent: {error}")
        else:
            if share is not None:
                body["rollout_percent"] = share
    return body, problems


def _put(fields: dict[str, Any], path: str, value: Any) -> None:
    """`latency_ms.p95` -> fields["latency_ms"]["p95"]."""
    *parents, leaf = path.split(".")
    node = fields
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value


class Puller:
    """The 30-second monitoring loop, in a thread."""

    def __init__(
        self, guard: Guard, config: PullConfig, log: Log | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.guard = guard
        self.config = config
        self.source = Prometheus(config.prometheus, config.timeout)
        self.log = log
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="abguard-pull", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.config.timeout * 2 + 5)

    def _run(self) -> None:
        next_at = self.clock()
        while not self._stop.is_set():
            if self.guard.serving:
                self.round(round(self.clock(), 3))
            next_at += self.config.interval
            self._stop.wait(max(0.0, next_at - self.clock()))

    def round(self, at: float) -> list[dict[str, Any]]:
        """One snapshot per test at `at`, evaluated; the decisions made."""
        decisions = []
        for test in self.config.tests:
            body, problems = snapshot(self.config, self.source, test, at)
            if problems:
                self._event({"event": "pull_incomplete", "test_id": test.test_id, "problems": problems[:10]})
            if body is None:
                continue
            try:
                decision = self.guard.evaluate(body)
            except Exception as error:  # refused (out of order, invalid) or the log is down: the next round tries again
                self._event({"event": "pull_evaluate_failed", "test_id": test.test_id, "why": str(error)[:300]})
                continue
            decisions.append(decision)
            self._event(
                {"event": "pulled", "test_id": test.test_id, "decision_id": decision["decision_id"],
                 "action": decision["action"]}
            )  # fmt: skip
        return decisions

    def _event(self, event: dict[str, Any]) -> None:
        if self.log is not None:
            self.log(event)
