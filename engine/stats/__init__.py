"""Pure statistics on plain numbers: no state, no clocks, no I/O.

Small inputs and one call per evaluation make plain floats faster than numpy here;
scipy's special functions give the distributions without per-call object overhead.
"""

from __future__ import annotations

from .histograms import histogram_mean, histogram_quantile
from .ks import ks_binned
from .moments import mean_std, pearson, quantile, quantize
from .proportions import Z_95, p_value_worse, wilson_interval

__all__ = [
    "Z_95",
    "histogram_mean",
    "histogram_quantile",
    "ks_binned",
    "mean_std",
    "p_value_worse",
    "pearson",
    "quantile",
    "quantize",
    "wilson_interval",
]
