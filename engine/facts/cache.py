"""Cache performance: the challenger's overall and per-tier hit rates, evictions per minute
against the cache's size, and response time, over the window.

Tiers fall through (a miss in L1 is looked up in L2, and so on), so the one definition of
the overall hit rate is 1 - misses of the last tier / lookups of the first (`overall`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Self

from ..contract import CACHE_TIERS, Cache, Snapshot
from ..policy.model import Condition
from .reading import Reading
from .windows import RollingSums

PREFIX = "cache"
EMITS = frozenset(
    {"hit_rate", *(f"{tier}_hit_rate" for tier in CACHE_TIERS), "eviction_rate", "response_time_ms", "samples"}
)
US_PER_SECOND = 1_000_000
NS_PER_MS = 1_000_000


class CacheCounts(NamedTuple):
    l1_hits: int
    l1_misses: int
    l2_hits: int
    l2_misses: int
    l3_hits: int
    l3_misses: int
    l4_hits: int
    l4_misses: int
    lookups: int  # first tier's
    final_misses: int  # last tier's
    evictions: int
    eviction_us: int  # how long the reported evictions took, in microseconds
    timed_lookups: int  # lookups of snapshots that reported a response time
    timed_ns: int  # those lookups x the response time, in nanoseconds


@dataclass(frozen=True, slots=True)
class CacheWindow:
    counts: RollingSums
    entries: int | None = None  # the cache's size, as last reported

    @classmethod
    def start(cls, condition: Condition) -> Self:
        return cls(RollingSums.empty(CacheCounts._make, len(CacheCounts._fields), condition.window_seconds))

    def add(self, s: Snapshot) -> Self:
        cache = s.challenger.cache
        if cache is None:
            return self
        lookups, final_misses = overall(cache)
        tiers = [0] * (2 * len(CACHE_TIERS))
        for index, tier in enumerate(CACHE_TIERS):
            counts = cache.tiers.get(tier)
            if counts is not None:
                tiers[2 * index], tiers[2 * index + 1] = counts.hits, counts.misses
        timed = lookups if cache.response_time_ms is not None else 0
        row = CacheCounts._make(
            (
                *tiers,
                lookups,
                final_misses,
                cache.evictions or 0,
                round(s.interval_seconds * US_PER_SECOND) if cache.evictions is not None else 0,
                timed,
                timed * round((cache.response_time_ms or 0.0) * NS_PER_MS),
            )
        )
        entries = cache.entries if cache.entries is not None else self.entries
        return type(self)(self.counts.add(s.timestamp, row), entries)

    def read(self, s: Snapshot, condition: Condition) -> Reading:
        n: CacheCounts = self.counts.sums(s.timestamp)
        facts: dict[str, float] = {"samples": n.lookups}
        if n.lookups > 0:
            facts["hit_rate"] = 1 - n.final_misses / n.lookups
        for tier in CACHE_TIERS:
            hits, misses = getattr(n, f"{tier}_hits"), getattr(n, f"{tier}_misses")
            if hits + misses > 0:
                facts[f"{tier}_hit_rate"] = hits / (hits + misses)
        if n.eviction_us > 0 and self.entries:
            minutes = n.eviction_us / US_PER_SECOND / 60
            facts["eviction_rate"] = n.evictions / minutes / self.entries
        if n.timed_lookups > 0:
            facts["response_time_ms"] = n.timed_ns / n.timed_lookups / NS_PER_MS
        return Reading(n.lookups, facts)

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes


def overall(cache: Cache) -> tuple[int, int]:
    """(lookups of the first tier, misses of the last): the overall hit rate's parts."""
    present = [cache.tiers[tier] for tier in CACHE_TIERS if tier in cache.tiers]
    if not present:
        return 0, 0
    return present[0].hits + present[0].misses, present[-1].misses


def overall_hit_rate(cache: Cache) -> float | None:
    lookups, final_misses = overall(cache)
    return 1 - final_misses / lookups if lookups else None
