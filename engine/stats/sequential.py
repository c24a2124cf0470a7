"""Sequential statistics: e-values per batch, a CUSUM e-detector with hysteresis, and the
normal-mixture confidence sequence that reports the effect since the detector's run began.

An e-value is a nonnegative number whose expectation under the null is at most 1. The CUSUM
e-detector (Shin, Ramdas, Rinaldo 2022) multiplies the e-values of consecutive batches and
restarts from 1 whenever the product falls below 1:

    M_t = max(M_{t-1}, 1) * e_t,    alarm when M_t >= A.

M_t is the largest product of e-values over the batches ending at t, each of which is a test
supermartingale from its start batch. By Ville's inequality each start crosses A with
probability at most 1/A and, by Dubins' upcrossing inequality, crosses up from A/2 to A at
most 2/A times in expectation. So over T null batches the expected number of alarm entries
is at most 2T/A, however often the statistic is read: that is the budget the policy states.
Evidence is kept as log M_t (nats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EXIT_FRACTION = 0.5  # an alarm holds until the log-evidence falls below half the entry level
CAP_FACTOR = 2.0  # log-evidence is capped at twice the entry level, so an alarm can end soon after its cause
INTERVAL_ALPHA = 0.05  # the reported intervals are 95% confidence sequences


def gaussian_log_e(estimate: float, variance: float, null: float, alternative: float) -> float:
    """log of N(alternative, variance) / N(null, variance) at the estimate.

    For alternative > null it is an e-value for every effect <= null (and mirrored for
    alternative < null): E[exp(log_e)] = exp((alternative - null) (effect - null) / variance).
    """
    return (alternative - null) * (estimate - (null + alternative) / 2) / variance


def binomial_log_e(x: float, n: float, p_null: float, p_alt: float) -> float:
    """log of Binomial(n, p_alt) / Binomial(n, p_null) at x: an exact e-value for every
    p on the far side of p_null from p_alt (the likelihood ratio is monotone in p)."""
    return x * math.log(p_alt / p_null) + (n - x) * math.log1p(-p_alt) - (n - x) * math.log1p(-p_null)


def detector_level(budget_per_day: float, batches_per_day: float, statistics: int) -> float:
    """The log-evidence A at which one statistic alarms so that `statistics` of them together
    enter at most `budget_per_day` false alarms per test-day: log(2 T k / budget)."""
    return math.log(2.0 * batches_per_day * statistics / budget_per_day)


def mixture_half_width(information: float, rho: float, alpha: float = INTERVAL_ALPHA) -> float:
    """Half-width, on the effect's scale, of the two-sided normal-mixture confidence sequence
    (Howard, Ramdas, McAuliffe, Sekhon 2021, eq. 14) for a precision-weighted mean whose
    summed precision is `information`: sqrt((V + rho) log((V + rho) / (rho alpha^2))) / V."""
    v = information
    return math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha * alpha))) / v


@dataclass(frozen=True, slots=True)
class Boundary:
    """Where one statistic alarms: enter at `enter` nats of evidence, leave below `exit`."""

    enter: float

    @property
    def exit(self) -> float:
        return self.enter * EXIT_FRACTION

    @property
    def cap(self) -> float:
        return self.enter * CAP_FACTOR


@dataclass(frozen=True, slots=True)
class Run:
    """One CUSUM e-detector: its log-evidence, whether it is in alarm, and the precision-weighted
    effect over the batches since the evidence last stood at zero (the current run)."""

    evidence: float = 0.0
    alarm: bool = False
    since: float | None = None  # start time of the run's first batch
    information: float = 0.0  # sum of 1 / variance over the run's batches
    weighted: float = 0.0  # sum of estimate / variance over the run's batches

    def update(self, log_e: float, estimate: float, variance: float, began: float, boundary: Boundary) -> Run:
        evidence = min(self.evidence + log_e, boundary.cap)
        if evidence <= 0.0:
            return self if self.evidence == 0.0 and self.since is None else AT_ZERO  # the healthy, common case
        alarm = evidence >= boundary.enter or (self.alarm and evidence > boundary.exit)
        since = began if self.since is None else self.since
        if not variance > 0.0 or not math.isfinite(estimate):
            return Run(evidence, alarm, since, self.information, self.weighted)
        return Run(evidence, alarm, since, self.information + 1.0 / variance, self.weighted + estimate / variance)

    @property
    def estimate(self) -> float | None:
        return self.weighted / self.information if self.information > 0 else None

    def interval(self, rho: float) -> tuple[float, float] | None:
        """The always-valid 95% interval of the run's effect (valid for a run start fixed in advance)."""
        estimate = self.estimate
        if estimate is None:
            return None
        half = mixture_half_width(self.information, rho)
        return estimate - half, estimate + half


AT_ZERO = Run()  # no evidence, no run: shared, since runs are immutable
