"""Recovery validation after a rollback, from the snapshots that keep arriving (pure).

The reference is the champion as it was in the snapshot that triggered the rollback: the
model every user is being returned to, measured before the rollback. Each later snapshot is
read over both arms together (the service users see):

    performance_restored   mean latency <= reference x 1.10          (score: reference / observed, capped at 1)
    error_rate_normalized  error rate <= reference x 1.20 + 0.001     (score: allowed / observed, capped at 1)
    cache_performance      hit rate >= reference - 0.005              (score: 1 - shortfall x 20, floored at 0)
    user_traffic           challenger requests == 0                   (score: 1 - 10 x challenger share: each
                                                                      1% of users still on it costs 0.1)

Recovery is judged once, on the first snapshot at least RECOVERY_WINDOW seconds (2 minutes,
the spec's "within 2 minutes") after the rollback decision: the score is the mean of the
checks that could be read, `successful_recovery` at >= 0.95, else `partial_recovery`.
`recovery_seconds` is the time to the first snapshot at which every check passed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import Arm, Snapshot
from ..facts.cache import overall
from ..facts.latency import arm_summary

RECOVERY_WINDOW = 120.0
SUCCESS = 0.95
LATENCY_SLACK, ERROR_SLACK, ERROR_FLOOR, CACHE_SLACK = 1.10, 1.20, 0.001, 0.005
TRAFFIC_PENALTY = 10.0  # "all user traffic restored to champion": a 10% share left scores 0


@dataclass(frozen=True, slots=True)
class Health:
    """What one snapshot says about the service, over the given arms."""

    latency_ms: float | None
    error_rate: float | None
    hit_rate: float | None
    challenger_share: float | None  # of the requests


def health(arms: tuple[Arm, ...], challenger: Arm | None = None) -> Health:
    requests = sum(arm.requests for arm in arms)
    latency = weighted = 0.0
    for arm in arms:
        summary = arm_summary(arm)
        if summary is not None and arm.requests > 0:
            latency += summary.mean * arm.requests
            weighted += arm.requests
    with_errors = [arm for arm in arms if arm.errors is not None]
    error_requests = sum(arm.requests for arm in with_errors)
    errors = sum(sum(arm.errors.values()) for arm in with_errors if arm.errors is not None)
    lookups = misses = 0
    for arm in arms:
        if arm.cache is not None:
            first, last_misses = overall(arm.cache)
            lookups, misses = lookups + first, misses + last_misses
    return Health(
        latency / weighted if weighted > 0 else None,
        errors / error_requests if error_requests > 0 else None,
        1 - misses / lookups if lookups > 0 else None,
        (challenger.requests / requests if requests > 0 else 0.0) if challenger is not None else None,
    )


def reference(s: Snapshot) -> Health:
    """The champion in the snapshot that triggered the rollback."""
    return health((s.champion,))


def service(s: Snapshot) -> Health:
    """Both arms together, as users see the service."""
    return health((s.champion, s.challenger), s.challenger)


def checks(ref: Health, now: Health) -> dict[str, float]:
    """Each check's score in [0, 1]; a check either side cannot read is left out."""
    out: dict[str, float] = {}
    if ref.latency_ms and now.latency_ms:
        allowed = ref.latency_ms * LATENCY_SLACK
        out["performance_restored"] = 1.0 if now.latency_ms <= allowed else min(1.0, allowed / now.latency_ms)
    if ref.error_rate is not None and now.error_rate is not None:
        allowed = ref.error_rate * ERROR_SLACK + ERROR_FLOOR
        out["error_rate_normalized"] = 1.0 if now.error_rate <= allowed else min(1.0, allowed / now.error_rate)
    if ref.hit_rate is not None and now.hit_rate is not None:
        shortfall = max(0.0, ref.hit_rate - CACHE_SLACK - now.hit_rate)
        out["cache_performance"] = max(0.0, 1.0 - shortfall * 20)
    if now.challenger_share is not None:
        out["user_traffic"] = max(0.0, 1.0 - TRAFFIC_PENALTY * now.challenger_share)
    return out


def passed(scores: dict[str, float]) -> bool:
    return bool(scores) and all(score >= 1.0 for score in scores.values())


def score(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores) if scores else 0.0


def verdict(value: float) -> str:
    return "successful_recovery" if value >= SUCCESS else "partial_recovery"
