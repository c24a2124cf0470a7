"""Synthetic snapshot streams of one A/B test: both arms of a healthy service, and effects on the challenger.

Every `interval` seconds for `hours`, each arm gets (drawn with numpy's Generator, seeded per test):

    requests      Poisson(rps x traffic shape x arm share x interval); the shape is constant, or
                  diurnal: 1 + 0.35 sin(2 pi t / 24 h + phase), a random phase per test
    labeled       Poisson(label_rate x interval) labels PER ARM (at most the arm's requests; the
                  challenger's rate may be its own, challenger_label_rate: a small challenger);
                  labels "prompt" come with their predictions' snapshot, "late" come per arm in
                  bursts every 5-20 minutes, each covering predictions 10-30 minutes older
    correct       Binomial(labeled, accuracy)
    latency_ms    a histogram on the bounds of scenarios/generate.py, multinomial over the requests
                  from a lognormal with median 1.0 ms and p95 1.64 ms; "realistic" latency adds a
                  heavy tail (0.5% of requests around 5 ms) and GC pauses in both arms (a snapshot
                  of an arm, with probability 2%, has 1-3% of its requests around 20 ms)
    confidence    10 bins, multinomial over a 10% sample of the requests, from Beta(8, 1.2)
    errors        Binomial(requests, p) per category; the probabilities sum to the spec's 1% baseline
    retries       80% of the errors retried, 5% of retries fail
    cache         two tiers: L1 hits 80% of lookups, L2 96% of L1's misses (99.2% overall)
    the rest      evictions, entries, cache response time, concurrent requests (Little's law),
                  queue depth, CPU (following the traffic), memory, duplicate entities

The arms are identical in distribution; an `Effect` changes the challenger from its start on.
Each block of BLOCK steps is drawn in a few vectorised calls, then cut into snapshot dicts: the JSON
shape `engine.contract.parse_snapshot` takes. Pure: no I/O, no clock, the same seed gives the
same stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

from ..contract import ERROR_CATEGORIES, format_time
from .effects import Effect

Shape = Literal["constant", "diurnal"]
SHAPES: tuple[Shape, ...] = ("constant", "diurnal")
LatencyModel = Literal["light", "realistic"]
LATENCY_MODELS: tuple[LatencyModel, ...] = ("light", "realistic")
LabelDelivery = Literal["prompt", "late"]
LABEL_DELIVERIES: tuple[LabelDelivery, ...] = ("prompt", "late")
START = 1_795_478_400.0  # 2026-11-24T00:00:00Z: the first interval ends one interval later
DAY = 86_400.0

# --- the healthy service ------------------------------------------------------------------------
BOUNDS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 25.0)  # as scenarios/generate.py
# healthy means within the validated targets (mean 1.25 ms, p95 1.87 ms) as the engine reads them:
# p50 1.0, p95 1.74 (interpolated in the 1.5-2 ms bucket), mean 1.05 ms
LATENCY_MEDIAN_MS = 1.0
LATENCY_P95_MS = 1.64
LATENCY_SIGMA = math.log(LATENCY_P95_MS / LATENCY_MEDIAN_MS) / 1.6448536269514722  # lognormal shape
CONFIDENCE_BETA = (8.0, 1.2)  # mean 0.87: about as confident as the champion is accurate
CONFIDENCE_SHARE = 0.1  # share of requests whose confidence is binned
ERROR_RATES = {"extraction": 0.005, "serialization": 0.001, "timeout": 0.003, "cache": 0.001}  # 1% in all
RETRY_SHARE, RETRY_FAILURE = 0.8, 0.05
L1_HIT, L2_HIT = 0.8, 0.96  # overall 1 - 0.2 x 0.04 = 99.2%
CACHE_ENTRIES = 100_000
EVICTIONS_PER_MINUTE = 0.01  # of the entries
CACHE_MS = (1.4, 0.05)  # mean, sd
QUEUE_DEPTH = 8.0
CPU = (0.45, 0.02)  # at the mean traffic; it follows the traffic shape
MEMORY = (0.55, 0.01)
DUPLICATES = (0.01, 0.001)
DIURNAL_AMPLITUDE = 0.35
# realistic latency: a heavy tail, GC pauses, and the tail effect's slow requests (median ms, lognormal sigma)
HEAVY_SHARE, HEAVY_MS = 0.005, (5.0, 0.5)
GC_PROBABILITY, GC_SHARE, GC_MS = 0.02, (0.01, 0.03), (20.0, 0.3)
TAIL_MS = (6.0, 0.2)
# late labels: per arm, a burst every 5-20 minutes delivers the labels of predictions 10-30 minutes old
BURST_MINUTES, LAG_MINUTES = (5.0, 20.0), (10.0, 30.0)

assert tuple(ERROR_RATES) == ERROR_CATEGORIES


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One test's traffic and model; the effects apply to the challenger."""

    hours: float = 6.0
    interval: float = 30.0
    rps: float = 42_000.0  # both arms together: the spec's validated throughput
    rollout: float = 10.0  # the challenger's percent of the requests
    traffic: Shape = "constant"
    label_rate: float = 10.0  # labels per second per arm
    accuracy: float = 0.88  # the champion's (and a healthy challenger's)
    effects: tuple[Effect, ...] = field(default_factory=tuple)
    latency_model: LatencyModel = "light"
    challenger_label_rate: float | None = None  # labels per second of the challenger, when not label_rate
    labels: LabelDelivery = "prompt"

    @property
    def steps(self) -> int:
        return int(self.hours * 3600 / self.interval + 1e-9)

    def check(self) -> None:
        """ValueError naming the first setting that cannot give a contract-valid stream."""
        if not (self.interval > 0 and self.interval <= DAY):
            raise ValueError(f"interval must be within 0..86400 s, got {self.interval:g}")
        if self.steps < 1:
            raise ValueError(f"{self.hours:g} h holds no {self.interval:g} s interval")
        if not 0 < self.rollout < 100:
            raise ValueError(f"rollout must be strictly between 0 and 100 percent, got {self.rollout:g}")
        if not self.rps > 0 or not self.label_rate >= 0:
            raise ValueError("rps must be > 0 and the label rate >= 0")
        if self.traffic not in SHAPES:
            raise ValueError(f"traffic must be one of {', '.join(SHAPES)}, got {self.traffic!r}")
        if self.latency_model not in LATENCY_MODELS:
            raise ValueError(f"latency model must be one of {', '.join(LATENCY_MODELS)}, got {self.latency_model!r}")
        if self.labels not in LABEL_DELIVERIES:
            raise ValueError(f"labels must be one of {', '.join(LABEL_DELIVERIES)}, got {self.labels!r}")
        if self.challenger_label_rate is not None and not self.challenger_label_rate >= 0:
            raise ValueError("the challenger's label rate must be >= 0")
        if not 0 <= self.accuracy <= 1:
            raise ValueError(f"accuracy must be within 0..1, got {self.accuracy:g}")
        for effect in self.effects:
            if effect.kind in ("accuracy", "shared") and self.accuracy * effect.factor() > 1:
                raise ValueError(f"{effect.spec} makes the challenger's accuracy more than 1")
            if effect.kind == "error_rate" and sum(ERROR_RATES.values()) * effect.factor() >= 1:
                raise ValueError(f"{effect.spec} makes the challenger's error probability 1 or more")
        requests = self.rps * self.interval * (1 + DIURNAL_AMPLITUDE)
        if requests > 1e11:
            raise ValueError(f"{self.rps:g} requests/s over {self.interval:g} s leaves the contract's count domain")


def stream(config: StreamConfig, test_id: str, seed: int) -> Iterator[dict[str, Any]]:
    """The test's snapshots, oldest first, as dicts parse_snapshot accepts."""
    late = LateLabels(config, seed) if config.labels == "late" else None
    for block in blocks(config, seed):
        if late is not None:
            late.deliver(block)
        yield from snapshots(config, test_id, block)


class LateLabels:
    """Label delivery per arm, independent of the other arm: each burst brings every label of the
    predictions older than its lag that has not come yet. Its own random stream (from the seed), so
    the rest of the stream is that of prompt labels."""

    def __init__(self, config: StreamConfig, seed: int) -> None:
        self.rngs = [np.random.default_rng([seed, 1, arm]) for arm in (0, 1)]  # one schedule per arm
        self.interval = config.interval
        self.queued: list[list[tuple[float, int, int]]] = [[], []]  # per arm: (prediction end, labeled, correct)
        self.next_burst = [self._gap(0), self._gap(1)]
        self.lag = [self._lag(0), self._lag(1)]
        self.until = [0.0, 0.0]  # seconds from the start up to which each arm's delivered labels cover predictions

    def _gap(self, arm: int) -> float:
        return float(self.rngs[arm].uniform(*BURST_MINUTES)) * 60

    def _lag(self, arm: int) -> float:
        return float(self.rngs[arm].uniform(*LAG_MINUTES)) * 60

    @classmethod
    def first_carrying(cls, config: StreamConfig, seed: int, at: float) -> float | None:
        """When (seconds from the start) the challenger's first label of a prediction made after `at`
        arrives: the earliest any statistic can see a change of the model's accuracy at `at`."""
        schedule = cls(config, seed)
        for step in range(config.steps):
            end = (step + 1) * config.interval
            if end >= schedule.next_burst[1]:
                if end - schedule.lag[1] > at:
                    return end
                schedule.next_burst[1] = end + schedule._gap(1)
                schedule.lag[1] = schedule._lag(1)
        return None

    def deliver(self, d: Drawn) -> None:
        """Replace the block's labels by those delivered in each interval (in place), and say up to when
        each arm's labels cover its predictions (`labels_until`, from the last burst)."""
        for step, end in enumerate(d.ends):
            for arm in (0, 1):
                self.queued[arm].append((end, d.labeled[step][arm], d.correct[step][arm]))
                labeled = correct = 0
                if end >= self.next_burst[arm]:
                    cutoff = end - self.lag[arm]
                    kept = []
                    for made, n, c in self.queued[arm]:
                        if made <= cutoff:
                            labeled, correct = labeled + n, correct + c
                        else:
                            kept.append((made, n, c))
                    self.queued[arm] = kept
                    self.next_burst[arm] = end + self._gap(arm)
                    self.lag[arm] = self._lag(arm)
                    self.until[arm] = max(self.until[arm], cutoff)
                d.labeled[step][arm], d.correct[step][arm] = labeled, correct
                d.labels_until[step][arm] = self.until[arm] if self.until[arm] > 0 else None


@dataclass(frozen=True, slots=True)
class Drawn:
    """The values of a block of steps, as nested lists [step][arm] (0 champion, 1 challenger)."""

    ends: list[float]  # seconds from the test's start at which each interval ends
    phase: float
    requests: list[list[int]]
    labeled: list[list[int]]
    correct: list[list[int]]
    latency: list[list[list[int]]]
    confidence: list[list[list[int]]]
    errors: list[list[list[int]]]
    retries: list[list[list[int]]]  # attempted, failed
    cache: list[list[list[int]]]  # l1 hits, l1 misses, l2 hits, l2 misses, evictions, concurrent, queue
    reals: list[list[list[float]]]  # cache ms, cpu, memory, duplicates
    labels_until: list[list[float | None]] = field(default_factory=list)  # late labels: seconds from the start


BLOCK = 120  # steps drawn at once; blocks are always whole, so a longer run starts with the shorter one


def blocks(config: StreamConfig, seed: int) -> Iterator[Drawn]:
    """The stream's random values, BLOCK steps at a time in a few vectorised draws each.

    Every block is drawn whole (the last one is cut after drawing), so the values of a step do
    not depend on how long the run is: the same seed gives the same first hours."""
    config.check()
    rng = np.random.default_rng(seed)
    phase = float(rng.uniform(0.0, 2 * math.pi))
    steps = config.steps
    for first in range(0, steps, BLOCK):
        yield _block(rng, config, phase, first, min(BLOCK, steps - first))


def _block(rng: np.random.Generator, config: StreamConfig, phase: float, first: int, keep: int) -> Drawn:
    ends = config.interval * np.arange(first + 1, first + BLOCK + 1, dtype=float)
    if config.traffic == "diurnal":
        middle = ends - config.interval / 2
        shape = 1 + DIURNAL_AMPLITUDE * np.sin(2 * math.pi * middle / DAY + phase)
    else:
        shape = np.ones(BLOCK)
    share = np.array([1 - config.rollout / 100, config.rollout / 100])
    mean_requests = config.rps * config.interval * shape[:, None] * share[None, :]  # (steps, 2)
    arms = _Arms(config, ends)

    requests = rng.poisson(mean_requests)
    label_rate: float | np.ndarray = config.label_rate
    if config.challenger_label_rate is not None:
        label_rate = np.array([config.label_rate, config.challenger_label_rate])
    labeled = np.minimum(rng.poisson(np.multiply(label_rate, config.interval), size=(BLOCK, 2)), requests)
    correct = rng.binomial(labeled, arms.accuracy(config.accuracy))
    latency = rng.multinomial(requests, _latency_probabilities(rng, config, arms))
    confidence = rng.multinomial(
        np.rint(requests * CONFIDENCE_SHARE).astype(np.int64),
        arms.bins(_confidence_bins(0.0), _confidence_bins(arms.shift), "confidence"),
    )
    error_p = np.array(list(ERROR_RATES.values()))[None, None, :] * arms.value(1.0, "error_rate")[:, :, None]
    errors = rng.binomial(requests[:, :, None], error_p)
    attempted = rng.binomial(errors.sum(axis=2), RETRY_SHARE)
    failed = rng.binomial(attempted, RETRY_FAILURE)
    cache = _cache(rng, config, requests, mean_requests, arms)
    reals = _reals(rng, shape)
    return Drawn(
        ends=ends[:keep].tolist(),
        phase=phase,
        requests=requests[:keep].tolist(),
        labeled=labeled[:keep].tolist(),
        correct=correct[:keep].tolist(),
        latency=latency[:keep].tolist(),
        confidence=confidence[:keep].tolist(),
        errors=errors[:keep].tolist(),
        retries=np.stack([attempted, failed], axis=2)[:keep].tolist(),
        cache=cache[:keep].tolist(),
        reals=reals[:keep].tolist(),
        labels_until=[[None, None] for _ in range(keep)],
    )


class _Arms:
    """Per step and arm, the model's parameters: healthy, the challenger's changed where an effect is on."""

    def __init__(self, config: StreamConfig, ends: np.ndarray) -> None:
        self.active = {
            kind: np.zeros(len(ends), dtype=bool) for kind in ("accuracy", "latency", "error_rate", "confidence")
        }
        self.active["tail"] = np.zeros(len(ends), dtype=bool)
        self.active["shared"] = np.zeros(len(ends), dtype=bool)
        self.factor = dict.fromkeys(self.active, 1.0)
        self.shift = 0.0
        self.tail = 0.0
        for effect in config.effects:
            self.active[effect.kind] |= ends > effect.at
            if effect.kind == "confidence":
                self.shift = effect.size
            elif effect.kind == "tail":
                self.tail = effect.size
            else:
                self.factor[effect.kind] = effect.factor()
        self.latency = LATENCY_MEDIAN_MS * self.factor["latency"]

    def accuracy(self, healthy: float) -> np.ndarray:
        """(steps, 2): the challenger's accuracy changed by its effect, both arms' by a shared one."""
        values = self.value(healthy, "accuracy")
        values[self.active["shared"], :] *= self.factor["shared"]
        return values

    def value(self, healthy: float, kind: str) -> np.ndarray:
        """(steps, 2)"""
        values = np.full((len(self.active[kind]), 2), healthy)
        values[self.active[kind], 1] = healthy * self.factor[kind]
        return values

    def bins(self, healthy: tuple[float, ...], changed: tuple[float, ...], kind: str = "latency") -> np.ndarray:
        """(steps, 2, bins) probabilities"""
        p = np.empty((len(self.active[kind]), 2, len(healthy)))
        p[:] = healthy
        p[self.active[kind], 1] = changed
        return p


def _cache(
    rng: np.random.Generator, config: StreamConfig, requests: np.ndarray, mean_requests: np.ndarray, arms: _Arms
) -> np.ndarray:
    """(steps, 2, 7): l1 hits, l1 misses, l2 hits, l2 misses, evictions, concurrent requests, queue depth."""
    l1_hits = rng.binomial(requests, L1_HIT)
    l1_misses = requests - l1_hits
    l2_hits = rng.binomial(l1_misses, L2_HIT)
    evictions = rng.poisson(CACHE_ENTRIES * EVICTIONS_PER_MINUTE * config.interval / 60, size=requests.shape)
    mean_latency_s = arms.value(LATENCY_MEDIAN_MS, "latency") * math.exp(LATENCY_SIGMA**2 / 2) / 1000
    concurrent = rng.poisson(mean_requests / config.interval * mean_latency_s)  # Little's law
    queue = rng.poisson(QUEUE_DEPTH, size=requests.shape)
    return np.stack([l1_hits, l1_misses, l2_hits, l1_misses - l2_hits, evictions, concurrent, queue], axis=2)


def _reals(rng: np.random.Generator, shape: np.ndarray) -> np.ndarray:
    """(steps, 2, 4): cache response ms, CPU (following the traffic), memory, duplicate entity rate."""
    size = (len(shape), 2)
    cache_ms = np.clip(rng.normal(*CACHE_MS, size=size), 0.0, None).round(3)
    cpu = np.clip(rng.normal(CPU[0] * shape[:, None], CPU[1], size=size), 0.0, 1.0).round(3)
    memory = np.clip(rng.normal(*MEMORY, size=size), 0.0, 1.0).round(3)
    duplicates = np.clip(rng.normal(*DUPLICATES, size=size), 0.0, 1.0).round(4)
    return np.stack([cache_ms, cpu, memory, duplicates], axis=2)


def snapshots(config: StreamConfig, test_id: str, d: Drawn) -> Iterator[dict[str, Any]]:
    interval, rollout = float(config.interval), float(config.rollout)
    for step, end in enumerate(d.ends):
        arms = [_arm(d, step, arm) for arm in (0, 1)]
        yield {
            "test_id": test_id,
            "timestamp": format_time(START + end),
            "interval_seconds": interval,
            "rollout_percent": rollout,
            "champion": arms[0],
            "challenger": arms[1],
        }


def _arm(d: Drawn, step: int, arm: int) -> dict[str, Any]:
    until = d.labels_until[step][arm] if d.labels_until else None
    out = _metrics(d, step, arm)
    if until is not None:
        out["labels_until"] = format_time(START + until)
    return out


def _metrics(d: Drawn, step: int, arm: int) -> dict[str, Any]:
    errors = d.errors[step][arm]
    attempted, failed = d.retries[step][arm]
    l1_hits, l1_misses, l2_hits, l2_misses, evictions, concurrent, queue = d.cache[step][arm]
    cache_ms, cpu, memory, duplicates = d.reals[step][arm]
    return {
        "requests": d.requests[step][arm],
        "labeled": d.labeled[step][arm],
        "correct": d.correct[step][arm],
        "latency_ms": {"bounds": list(BOUNDS), "counts": d.latency[step][arm]},
        "confidence_histogram": d.confidence[step][arm],
        "errors": dict(zip(ERROR_CATEGORIES, errors, strict=True)),
        "retries": {"attempted": attempted, "failed": failed},
        "cache": {
            "l1": {"hits": l1_hits, "misses": l1_misses},
            "l2": {"hits": l2_hits, "misses": l2_misses},
            "evictions": evictions,
            "entries": CACHE_ENTRIES,
            "response_time_ms": cache_ms,
        },
        "concurrent_requests": concurrent,
        "queue_depth": queue,
        "cpu_utilization": cpu,
        "memory_utilization": memory,
        "duplicate_entity_rate": duplicates,
    }


@lru_cache(maxsize=64)
def _latency_bins(median: float, sigma: float = LATENCY_SIGMA) -> tuple[float, ...]:
    """P(latency in each bucket of BOUNDS, +Inf last) for a lognormal with this median."""
    cdf = [0.5 * (1 + math.erf(math.log(bound / median) / (sigma * math.sqrt(2)))) for bound in BOUNDS]
    edges = [0.0, *cdf, 1.0]
    return tuple(max(0.0, b - a) for a, b in pairwise(edges))


def _latency_probabilities(rng: np.random.Generator, config: StreamConfig, arms: _Arms) -> np.ndarray:
    """(steps, 2, bins): the healthy lognormal (the challenger's scaled by a latency effect), with the
    realistic model's heavy tail and GC pauses in both arms, and a tail effect's slow requests."""
    p = arms.bins(_latency_bins(LATENCY_MEDIAN_MS), _latency_bins(arms.latency))
    if config.latency_model == "realistic":
        p = (1 - HEAVY_SHARE) * p + HEAVY_SHARE * np.array(_latency_bins(*HEAVY_MS))
        paused = rng.random(p.shape[:2]) < GC_PROBABILITY  # drawn only here: light streams stay as they were
        share = np.where(paused, rng.uniform(*GC_SHARE, size=p.shape[:2]), 0.0)[:, :, None]
        p = (1 - share) * p + share * np.array(_latency_bins(*GC_MS))
    if arms.tail > 0:
        slow = np.where(arms.active["tail"], arms.tail, 0.0)
        p[:, 1] = (1 - slow[:, None]) * p[:, 1] + slow[:, None] * np.array(_latency_bins(*TAIL_MS))
    return p


EDGES = np.linspace(0.0, 1.0, 11)


@lru_cache(maxsize=64)
def _confidence_bins(ks: float) -> tuple[float, ...]:
    """Bin probabilities of the healthy Beta, or of one shifted lower (its `a` scaled down) so that the
    largest gap between the cumulative bin shares, the binned KS distance, is `ks`."""
    a, b = CONFIDENCE_BETA
    if ks > 0:
        healthy = stats.beta.cdf(EDGES[1:-1], a, b)

        def gap(scale: float) -> float:
            return float(np.max(stats.beta.cdf(EDGES[1:-1], a * scale, b) - healthy)) - ks

        a *= optimize.brentq(gap, 1e-6, 1.0, xtol=1e-12)
    cdf = stats.beta.cdf(EDGES, a, b)
    return tuple(float(x) for x in np.diff(cdf))


def confidence_ks(ks: float) -> float:
    """The binned KS distance between the healthy and the shifted confidence bins (what an effect asks for)."""
    healthy, shifted = np.cumsum(_confidence_bins(0.0)), np.cumsum(_confidence_bins(ks))
    return float(np.max(np.abs(healthy - shifted)))
