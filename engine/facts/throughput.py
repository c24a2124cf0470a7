"""Throughput: whole-service requests per second over the window, the challenger's rate per
unit of traffic share against the champion's, the latest load (queues, concurrency, CPU), and
the sequential detector of the challenger's requests per share against the champion's (`drop_*`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Self

from ..contract import Snapshot
from ..policy.model import Condition
from ..stats.sequential import Boundary, binomial_log_e
from .reading import Reading
from .sequential import Detector, Detectors, DetectorSpec, Evidence, Settings, advance, relative_settings
from .windows import RollingSums

PREFIX = "throughput"


@dataclass(frozen=True, slots=True)
class ShareDrop:
    """The challenger's requests per unit of traffic share against the champion's, by the
    conditional binomial test: given a snapshot's requests, the challenger's count is Binomial
    with the mean its share and the rate ratio set, so each snapshot gives an exact e-value."""

    settings: Settings
    components: Sequence[str] = ("requests",)

    @property
    def signed(self) -> bool:
        return True

    def row(self, s: Snapshot) -> tuple[float, ...] | None:
        if s.rollout_percent is None or not 0 < s.rollout_percent < 100:
            return None
        share = s.rollout_percent / 100
        n_c, n_h = s.challenger.requests, s.champion.requests
        total = n_c + n_h
        if total <= 0:
            return None
        # the internal scale is log(champion per share / challenger per share): a drop is positive
        null, alternative = share * math.exp(-self.settings.null), share * math.exp(-self.settings.alternative)
        p_null, p_alt = null / (null + 1 - share), alternative / (alternative + 1 - share)
        return (binomial_log_e(n_c, total, p_null, p_alt), n_c, n_h, total * share, total * (1 - share))

    def judge(self, pending: tuple[float, ...]) -> list[Evidence | None] | None:
        log_e, n_c, n_h, expected_c, expected_h = pending
        if expected_c <= 0 or expected_h <= 0:
            return None
        d = math.log((n_h + 0.5) / expected_h) - math.log((n_c + 0.5) / expected_c)
        return [Evidence(log_e, d, 1 / (n_c + 0.5) + 1 / (n_h + 0.5))]

    def shown(self, internal: float) -> float:
        return -math.expm1(-internal)  # the relative drop of requests per share

    def describe(self, component: int) -> str:
        return "challenger requests per traffic share, drop vs champion"


def _drop(condition: Condition, boundary: Boundary, batch: float) -> ShareDrop:
    threshold = condition.thresholds["throughput_degradation_percentage"]
    return ShareDrop(relative_settings(threshold, boundary, batch, worse_is_lower=True).clustered())


DETECTORS = (DetectorSpec("drop", 1, ("throughput_degradation_percentage",), _drop),)
EMITS = frozenset(
    {fact for spec in DETECTORS for fact in spec.facts()}
    | {
        "service_rps",
        "relative_drop",
        "queue_depth",
        "concurrent_requests",
        "cpu_utilization",
        "memory_utilization",
        "samples",
    }
)
LOAD: tuple[tuple[str, Callable[[list[float]], float]], ...] = (
    ("queue_depth", max),  # the deeper queue
    ("concurrent_requests", sum),  # the whole service's
    ("cpu_utilization", max),
    ("memory_utilization", max),
)
US_PER_SECOND = 1_000_000
PPM = 1_000_000  # traffic shares in parts per million
SHARED_SCALE = 10**12  # requests per unit of share are kept as whole numbers at this scale


class Volume(NamedTuple):
    champion_requests: int
    challenger_requests: int
    interval_us: int
    snapshots: int
    champion_per_share: int  # requests / the arm's traffic share, x SHARED_SCALE / PPM
    challenger_per_share: int


@dataclass(frozen=True, slots=True)
class ThroughputWindow:
    volume: RollingSums
    detectors: Detectors = ()

    @classmethod
    def start(cls, condition: Condition, detectors: Sequence[tuple[str, Detector]] = ()) -> Self:
        return cls(RollingSums.empty(Volume._make, len(Volume._fields), condition.window_seconds), tuple(detectors))

    def add(self, s: Snapshot) -> Self:
        champion, challenger = s.champion.requests, s.challenger.requests
        share = round(s.rollout_percent * PPM / 100) if s.rollout_percent is not None else 0
        # each snapshot's requests per unit of its own traffic share: a ramp is not a drop
        if 0 < share < PPM:
            shared = (champion * SHARED_SCALE // (PPM - share), challenger * SHARED_SCALE // share)
        else:
            shared = (0, 0)
        row = Volume(champion, challenger, round(s.interval_seconds * US_PER_SECOND), 1, *shared)
        return type(self)(self.volume.add(s.timestamp, row), advance(self.detectors, s))

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        v: Volume = self.volume.sums(s.timestamp)
        facts: dict[str, float] = {"samples": v.snapshots}
        if v.interval_us > 0:
            facts["service_rps"] = (v.champion_requests + v.challenger_requests) * US_PER_SECOND / v.interval_us
        if v.champion_per_share > 0:
            facts["relative_drop"] = 1 - v.challenger_per_share / v.champion_per_share
        for key, combine in LOAD:  # the latest snapshot's load, over the arms that report it
            values = [value for arm in (s.champion, s.challenger) if (value := getattr(arm, key)) is not None]
            if values:
                facts[key] = combine(values)
        reading = Reading(v.snapshots, facts)
        for name, detector in self.detectors:
            detector.read(name, reading)
        return reading

    @property
    def nbytes(self) -> int:
        return self.volume.nbytes
