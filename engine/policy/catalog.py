"""The fact, action and decision vocabularies a policy may use: the one place they are listed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ParamType = Literal["number", "fraction", "percent", "string", "boolean", "integer"]


@dataclass(frozen=True)
class Fact:
    name: str
    unit: str
    description: str


@dataclass(frozen=True)
class ActionSpec:
    name: str
    description: str
    params: dict[str, ParamType]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class SequentialStatistic:
    """A sequential detector's facts (docs/statistics.md): the stem, the thresholds that set its
    null and alternative, and the unit and words of its estimate."""

    stem: str  # "accuracy.drop" gives accuracy.drop_alarm, accuracy.drop_evidence, ...
    condition: str
    thresholds: tuple[str, ...]
    unit: str
    estimate: str
    floors: tuple[str, ...] = ()  # thresholds a statistic holds the challenger above: raising them is stricter

    def rows(self) -> tuple[tuple[str, str, str], ...]:
        return (
            (f"{self.stem}_alarm", "0/1", f"1 while the sequential test of {self.estimate} is in alarm (hysteresis)"),
            (f"{self.stem}_evidence", "nats", f"log e-detector (CUSUM) evidence of {self.estimate}"),
            (f"{self.stem}_estimate", self.unit, f"{self.estimate} since the evidence last stood at zero"),
            (f"{self.stem}_low", self.unit, "lower end of that estimate's 95% always-valid interval"),
            (f"{self.stem}_high", self.unit, "upper end of that estimate's 95% always-valid interval"),
        )


SEQUENTIAL: tuple[SequentialStatistic, ...] = (
    SequentialStatistic(
        "accuracy.drop", "accuracy", ("accuracy_degradation_percentage",), "fraction",
        "the challenger's relative accuracy drop vs the champion",
    ),
    SequentialStatistic(
        "accuracy.floor", "accuracy", ("accuracy_threshold", "accuracy_floor_margin"), "ratio",
        "the challenger's accuracy below the absolute floor", ("accuracy_threshold",),
    ),
    SequentialStatistic(
        "accuracy.champion_floor", "accuracy", ("accuracy_threshold", "accuracy_floor_margin"), "ratio",
        "the champion's accuracy below the same floor (a shift both arms share)", ("accuracy_threshold",),
    ),
    SequentialStatistic(
        "latency.increase", "latency", ("latency_increase",), "fraction",
        "the challenger's mean latency increase vs the champion",
    ),
    SequentialStatistic(
        "latency.tail", "latency", ("latency_tail_increase",), "fraction",
        "the challenger's share of requests in the latency tail vs the champion's (above the pooled p98 bound)",
    ),
    SequentialStatistic(
        "confidence.drift", "confidence_drift", ("confidence_drift_threshold",), "fraction",
        "the largest gap between the arms' cumulative confidence shares (binned KS)",
    ),
    SequentialStatistic(
        "errors.increase", "error_rate", ("error_rate_increase",), "fraction",
        "the challenger's error rate increase vs the champion, in total or by category",
    ),
    SequentialStatistic(
        "throughput.drop", "throughput", ("throughput_degradation_percentage",), "fraction",
        "the challenger's drop in requests per traffic share vs the champion",
    ),
)  # fmt: skip


def _facts(*rows: tuple[str, str, str]) -> dict[str, Fact]:
    sequential = (row for statistic in SEQUENTIAL for row in statistic.rows())
    return {name: Fact(name, unit, description) for name, unit, description in (*rows, *sequential)}


FACTS: dict[str, Fact] = _facts(
    # accuracy: rolling window over labeled predictions
    ("accuracy.challenger", "ratio", "challenger accuracy (correct / labeled) over the window"),
    ("accuracy.champion", "ratio", "champion accuracy (correct / labeled) over the window"),
    ("accuracy.challenger_ci_low", "ratio", "lower bound of the challenger's 95% Wilson interval"),
    ("accuracy.challenger_ci_high", "ratio", "upper bound of the challenger's 95% Wilson interval"),
    ("accuracy.relative_drop", "fraction", "(champion - challenger) / champion accuracy"),
    ("accuracy.p_value", "probability", "one-sided p-value of 'challenger is less accurate'"),
    ("accuracy.samples", "count", "labeled challenger predictions in the window"),
    ("accuracy.label_lag_seconds", "s", "how far the challenger's labels lag: the snapshot time minus labels_until"),
    ("accuracy.champion_label_lag_seconds", "s", "how far the champion's labels lag behind the snapshot"),
    # latency: challenger unless named otherwise
    ("latency.mean_ms", "ms", "challenger mean latency over the window"),
    ("latency.p50_ms", "ms", "challenger p50 latency over the window"),
    ("latency.p95_ms", "ms", "challenger p95 latency over the window"),
    ("latency.p99_ms", "ms", "challenger p99 latency over the window"),
    ("latency.champion_mean_ms", "ms", "champion mean latency over the window"),
    ("latency.champion_p95_ms", "ms", "champion p95 latency over the window"),
    ("latency.mean_increase", "fraction", "challenger mean latency vs champion's, minus 1"),
    ("latency.p95_increase", "fraction", "challenger p95 latency vs champion's, minus 1"),
    ("latency.pool_utilization", "fraction", "challenger concurrent requests / concurrent limit"),
    ("latency.samples", "count", "challenger requests in the window"),
    # confidence drift: recent challenger distribution vs the champion baseline
    ("confidence.ks_statistic", "ratio", "two-sample Kolmogorov-Smirnov statistic"),
    ("confidence.ks_p_value", "probability", "p-value of the KS test"),
    ("confidence.extreme_mass", "fraction", "share of challenger confidences in the extreme bins"),
    ("confidence.calibration_gap", "fraction", "challenger |mean confidence - accuracy| minus champion's"),
    ("confidence.duplicate_entity_rate", "fraction", "challenger duplicate entity rate"),
    ("confidence.duplicate_increase", "fraction", "challenger duplicate entity rate minus champion's"),
    ("confidence.samples", "count", "challenger confidences in the recent window"),
    # error rate: challenger over the window
    ("errors.rate", "fraction", "all errors / requests"),
    ("errors.champion_rate", "fraction", "champion errors / requests"),
    ("errors.extraction_rate", "fraction", "extraction errors / requests"),
    ("errors.serialization_rate", "fraction", "serialization errors / requests"),
    ("errors.timeout_rate", "fraction", "timeout errors / requests"),
    ("errors.cache_rate", "fraction", "cache errors / requests"),
    ("errors.retry_failure_rate", "fraction", "failed retries / attempted retries"),
    ("errors.rising_windows", "count", "consecutive windows whose error rate rose"),
    ("errors.samples", "count", "challenger requests in the window"),
    # cache: challenger over the window
    ("cache.hit_rate", "fraction", "1 - misses of the last tier / lookups of the first (tiers fall through)"),
    ("cache.l1_hit_rate", "fraction", "L1 (memory LRU) hit rate"),
    ("cache.l2_hit_rate", "fraction", "L2 (Redis) hit rate"),
    ("cache.l3_hit_rate", "fraction", "L3 (PostgreSQL buffer) hit rate"),
    ("cache.l4_hit_rate", "fraction", "L4 (materialized views) hit rate"),
    ("cache.eviction_rate", "fraction/min", "evictions per minute / entries"),
    ("cache.response_time_ms", "ms", "mean cache response time"),
    ("cache.samples", "count", "first-tier cache lookups in the window"),
    # throughput: whole service, arms normalised by traffic share
    ("throughput.service_rps", "rps", "requests per second over both arms"),
    ("throughput.relative_drop", "fraction", "1 - (challenger rps/share) / (champion rps/share)"),
    ("throughput.queue_depth", "count", "largest queue depth of either arm"),
    ("throughput.concurrent_requests", "count", "concurrent requests over both arms"),
    ("throughput.cpu_utilization", "fraction", "largest CPU utilisation of either arm"),
    ("throughput.memory_utilization", "fraction", "largest memory utilisation of either arm"),
    ("throughput.samples", "count", "snapshots in the window"),
    # anomaly: ensemble over each metric's own history
    ("anomaly.confidence", "probability", "ensemble confidence that the latest snapshot is anomalous"),
    ("anomaly.zscore_max", "sigma", "largest |z| of any metric against its history"),
    ("anomaly.iqr_outliers", "count", "metrics outside the IQR fences"),
    ("anomaly.level_shift", "sigma", "largest EWMA level shift of any metric"),
    ("anomaly.correlation_break", "ratio", "drop in requests/latency correlation vs history"),
    ("anomaly.samples", "count", "snapshots of history"),
)

ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("reduce_rollout", "multiply the challenger's traffic share", {"factor": "fraction"}, ("factor",)),
        ActionSpec("set_rollout", "set the challenger's traffic share", {"percent": "percent"}, ("percent",)),
        ActionSpec("alert", "notify a team", {"team": "string", "severity": "string"}, ("team",)),
        ActionSpec("freeze_assignments", "stop new challenger assignments", {}),
        ActionSpec("log_breakdown", "log a detailed breakdown", {"by": "string"}, ("by",)),
        ActionSpec("capture_samples", "capture sample predictions for review", {"count": "integer"}),
        ActionSpec("enable_mode", "switch the serving stack into a named mode", {"mode": "string"}, ("mode",)),
        ActionSpec("scale", "scale a named resource", {"resource": "string", "factor": "number"}, ("resource",)),
        ActionSpec("set_limit", "set a named limit", {"limit": "string", "factor": "number"}, ("limit",)),
        ActionSpec("trigger", "start a named procedure", {"procedure": "string"}, ("procedure",)),
    )
}

# What the decision engine may answer, mildest first: the order is the contract.
DECISION_ACTIONS: tuple[str, ...] = (
    "continue",
    "increase_monitoring",
    "reduce_rollout",
    "rollback",
    "immediate_rollback",
)

CONDITIONS: tuple[str, ...] = (
    "accuracy",
    "latency",
    "confidence_drift",
    "error_rate",
    "cache_performance",
    "throughput",
    "anomaly",
)

SENSITIVITIES: tuple[str, ...] = ("high", "medium", "low")
