"""Throughput: whole-service requests per second over the window, the challenger's rate per
unit of traffic share against the champion's, and the latest load (queues, concurrency, CPU)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Self

from ..contract import Snapshot
from ..policy.model import Condition
from .reading import Reading
from .windows import RollingSums

PREFIX = "throughput"
EMITS = frozenset(
    {
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
    volume: RollingSums[Volume]

    @classmethod
    def start(cls, condition: Condition) -> Self:
        return cls(RollingSums.empty(Volume._make, len(Volume._fields), condition.window_seconds))

    def add(self, s: Snapshot) -> Self:
        champion, challenger = s.champion.requests, s.challenger.requests
        share = round(s.rollout_percent * PPM / 100) if s.rollout_percent is not None else 0
        # each snapshot's requests per unit of its own traffic share: a ramp is not a drop
        if 0 < share < PPM:
            shared = (champion * SHARED_SCALE // (PPM - share), challenger * SHARED_SCALE // share)
        else:
            shared = (0, 0)
        row = Volume(champion, challenger, round(s.interval_seconds * US_PER_SECOND), 1, *shared)
        return type(self)(self.volume.add(s.timestamp, row))

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        v = self.volume.sums(s.timestamp)
        facts: dict[str, float] = {"samples": v.snapshots}
        if v.interval_us > 0:
            facts["service_rps"] = (v.champion_requests + v.challenger_requests) * US_PER_SECOND / v.interval_us
        if v.champion_per_share > 0:
            facts["relative_drop"] = 1 - v.challenger_per_share / v.champion_per_share
        for key, combine in LOAD:  # the latest snapshot's load, over the arms that report it
            values = [value for arm in (s.champion, s.challenger) if (value := getattr(arm, key)) is not None]
            if values:
                facts[key] = combine(values)
        return Reading(v.snapshots, facts)

    @property
    def nbytes(self) -> int:
        return self.volume.nbytes
