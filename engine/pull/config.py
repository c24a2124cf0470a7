"""The pull source config: where Prometheus is, which tests to build snapshots for, and one PromQL
query per contract field. A bad file is refused naming the field (`pull config: tests[0].arms: ...`).

    prometheus: http://127.0.0.1:9090
    interval: 30s                  # a snapshot per test this often; also its interval_seconds
    window: 1m                     # the range of rate() in the queries ($window); default: interval
    timeout: 5s                    # per query
    tests:
      - test_id: checkout-ranker
        labels: {service: ranker}  # $service in every query of this test
        arms:                      # each arm's own variables: $model
          champion: {model: v1}
          challenger: {model: v2}
        rollout_percent: 'max(abtest_rollout_percent{service="$service"})'   # optional, once per test
    queries:                       # per arm, one PromQL per contract field; $interval is in seconds
      requests: 'sum(rate(model_requests_total{service="$service",model="$model"}[$window])) * $interval'

Variables are `$name` (string.Template), so PromQL's own braces need no escaping. Count fields
are rounded to whole numbers; a query that returns no sample leaves its field out (its condition
is then inconclusive), except `requests`, without which the test is skipped that round.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..contract.snapshot import CACHE_TIERS, CONFIDENCE_BINS, ERROR_CATEGORIES
from ..policy.durations import parse_duration

COUNTS = {
    "requests", "labeled", "correct", "concurrent_requests", "queue_depth",
    *(f"errors.{kind}" for kind in ERROR_CATEGORIES), "retries.attempted", "retries.failed",
    *(f"cache.{tier}.{part}" for tier in CACHE_TIERS for part in ("hits", "misses")),
    "cache.evictions", "cache.entries", *(f"confidence_histogram.{b}" for b in range(CONFIDENCE_BINS)),
}  # fmt: skip
REALS = {
    "latency_ms.p50", "latency_ms.p95", "latency_ms.p99", "latency_ms.mean", "cache.response_time_ms",
    "cpu_utilization", "memory_utilization", "duplicate_entity_rate",
}  # fmt: skip
FIELDS = COUNTS | REALS
ARMS = ("champion", "challenger")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = frozenset({"interval", "window", "test_id", "arm"})


class PullConfigError(ValueError):
    """The pull config is not usable; the message names the field."""


@dataclass(frozen=True, slots=True)
class PulledTest:
    test_id: str
    labels: dict[str, str]
    arms: dict[str, dict[str, str]]
    rollout_percent: str | None


@dataclass(frozen=True, slots=True)
class PullConfig:
    prometheus: str
    interval: float
    window: float
    timeout: float
    tests: tuple[PulledTest, ...]
    queries: dict[str, str]

    def query(self, field: str, test: PulledTest, arm: str | None) -> str:
        """The PromQL of `field` for one test and arm, its variables filled in."""
        template = test.rollout_percent if field == "rollout_percent" else self.queries[field]
        assert template is not None
        variables = {
            **test.labels,
            **(test.arms[arm] if arm else {}),
            "interval": f"{self.interval:g}",
            "window": f"{self.window:g}s",
            "test_id": test.test_id,
            "arm": arm or "",
        }
        return string.Template(template).substitute(variables)


def load_pull_config(path: str | Path) -> PullConfig:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise PullConfigError(f"pull config: cannot read {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PullConfigError(f"pull config: {path}: not YAML: {error}") from None
    return parse_pull_config(data)


def parse_pull_config(data: Any) -> PullConfig:
    if not isinstance(data, dict):
        raise PullConfigError("pull config: must be a mapping")
    _no_unknown(data, {"prometheus", "interval", "window", "timeout", "tests", "queries"}, "")
    url = data.get("prometheus")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise PullConfigError("pull config: prometheus: is required: the server's http:// or https:// URL")
    interval = _duration(data.get("interval", "30s"), "interval")
    window = _duration(data.get("window", data.get("interval", "30s")), "window")
    timeout = _duration(data.get("timeout", "5s"), "timeout")
    queries = data.get("queries")
    if not isinstance(queries, dict) or "requests" not in queries:
        raise PullConfigError("pull config: queries: is required, with at least `requests`")
    for field, query in queries.items():
        if field not in FIELDS:
            raise PullConfigError(
                f"pull config: queries.{field}: not a snapshot field; one of {', '.join(sorted(FIELDS))}"
            )
        if not isinstance(query, str) or not query.strip():
            raise PullConfigError(f"pull config: queries.{field}: must be a PromQL string")
        _template(query, f"queries.{field}")
    latency = {f for f in queries if f.startswith("latency_ms.")}
    if latency and len(latency) != 4:
        raise PullConfigError("pull config: queries: latency_ms needs all of p50, p95, p99 and mean, or none")
    tests = data.get("tests")
    if not isinstance(tests, list) or not tests:
        raise PullConfigError("pull config: tests: is required: a list of the tests to pull")
    parsed = tuple(_test(item, f"tests[{index}]") for index, item in enumerate(tests))
    seen = [t.test_id for t in parsed]
    if len(set(seen)) != len(seen):
        raise PullConfigError("pull config: tests: a test_id is listed twice")
    config = PullConfig(url.rstrip("/"), interval, window, timeout, parsed, dict(queries))
    for index, test in enumerate(parsed):  # every variable every query names is defined
        for field in queries:
            for arm in ARMS:
                try:
                    config.query(field, test, arm)
                except KeyError as error:
                    raise PullConfigError(
                        f"pull config: queries.{field}: ${error.args[0]} is not defined for tests[{index}]"
                        f" ({test.test_id}) arm {arm}"
                    ) from None
        if test.rollout_percent is not None:
            try:
                config.query("rollout_percent", test, None)
            except KeyError as error:
                raise PullConfigError(
                    f"pull config: tests[{index}].rollout_percent: ${error.args[0]} is not defined"
                ) from None
    return config


def _test(item: Any, where: str) -> PulledTest:
    if not isinstance(item, dict):
        raise PullConfigError(f"pull config: {where}: must be a mapping")
    _no_unknown(item, {"test_id", "labels", "arms", "rollout_percent"}, where)
    test_id = item.get("test_id")
    if not isinstance(test_id, str) or not test_id.strip():
        raise PullConfigError(f"pull config: {where}.test_id: is required")
    labels = _variables(item.get("labels", {}), f"{where}.labels")
    arms = item.get("arms")
    if not isinstance(arms, dict) or set(arms) != set(ARMS):
        raise PullConfigError(
            f"pull config: {where}.arms: needs exactly champion and challenger, each with its variables"
        )
    rollout = item.get("rollout_percent")
    if rollout is not None and (not isinstance(rollout, str) or not rollout.strip()):
        raise PullConfigError(f"pull config: {where}.rollout_percent: must be a PromQL string")
    if rollout is not None:
        _template(rollout, f"{where}.rollout_percent")
    return PulledTest(test_id, labels, {arm: _variables(arms[arm], f"{where}.arms.{arm}") for arm in ARMS}, rollout)


def _variables(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PullConfigError(f"pull config: {where}: must be a mapping of names to values")
    out = {}
    for name, text in value.items():
        if not isinstance(name, str) or not NAME.match(name) or name in RESERVED:
            raise PullConfigError(f"pull config: {where}.{name}: not a usable variable name")
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise PullConfigError(f"pull config: {where}.{name}: must be a string or a number")
        if isinstance(text, str) and ('"' in text or "\\" in text):
            raise PullConfigError(f"pull config: {where}.{name}: a quote or backslash would break the query")
        out[name] = str(text)
    return out


def _template(text: str, where: str) -> None:
    try:
        string.Template(text).substitute({})
    except KeyError:
        return  # names are checked against each test's variables
    except ValueError as error:
        raise PullConfigError(f"pull config: {where}: {error} (write $name, or $$ for a dollar sign)") from None


def _duration(value: Any, where: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise PullConfigError(f"pull config: {where}: {error}") from None
    if seconds <= 0:
        raise PullConfigError(f"pull config: {where}: must be more than 0")
    return seconds


def _no_unknown(data: dict[str, Any], known: set[str], where: str) -> None:
    for key in data:
        if key not in known:
            at = f"{where}.{key}" if where else str(key)
            raise PullConfigError(f"pull config: {at}: unknown field; one of {', '.join(sorted(known))}")
