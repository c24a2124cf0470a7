"""`abguard simulate --plot`: the operating characteristic and one example timeline, as a PNG."""

from __future__ import annotations

import math
from typing import Any

from ..pipeline import Evaluator
from ..policy.model import Policy
from ..simulation import (
    Effect,
    StudyResult,
    StudySpec,
    TestRun,
    detection,
    run_test,
)
from ..simulation.runner import CUT_BACK

# --- the plot ---------------------------------------------------------------------------------------------


def plot(path: str, policy: Policy, results: list[StudyResult], sweep: list[Effect] | None) -> None:
    """Top: the operating characteristic (or, without a sweep, the share of tests that reacted over
    time); below: one example test's risk score, triggered conditions and target traffic."""
    # matplotlib costs half a second to import: only `--plot` pays it, not every abguard verb
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(
        4, 1, figsize=(11, 12), gridspec_kw={"height_ratios": [3, 2, 2, 1.4]}, constrained_layout=True
    )
    top, score, conditions, traffic = axes
    if sweep:
        _plot_oc(top, results, sweep)
    else:
        _plot_reactions(top, results)
    example = _example(results, sweep)
    evaluator = Evaluator(policy)
    spec = example.spec
    run = run_test(evaluator, spec.config, 0, spec.seed, stop=False)
    _plot_timeline((score, conditions, traffic), run, example, spec)
    figure.suptitle(f"abguard simulate: policy {policy.name} v{policy.version} ({policy.digest[:19]}...)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _example(results: list[StudyResult], sweep: list[Effect] | None) -> StudyResult:
    if sweep:
        return results[len(results) // 2]
    return next((r for r in results if r.spec.effects), results[0])


def _plot_oc(ax: Any, results: list[StudyResult], sweep: list[Effect]) -> None:
    sizes = [effect.size for effect in sweep]
    hours = results[0].spec.config.hours
    ceiling = (hours * 3600 - sweep[0].at) / 60
    series = (("first cut-back", "cutback", "tab:red"), ("condition triggered", "condition", "tab:blue"))
    for label, pick, color in series:
        medians, p90s = [], []
        for effect, result in zip(sweep, results, strict=True):
            found = detection(result, effect)
            delays = found.cutback if pick == "cutback" else found.condition_delay
            medians.append(_minutes(delays.median, ceiling))
            p90s.append(_minutes(delays.p90, ceiling))
        ax.plot(sizes, medians, "o-", color=color, label=f"{label}: median")
        ax.plot(sizes, p90s, "s--", color=color, alpha=0.6, label=f"{label}: p90")
    ax.axhline(ceiling, color="grey", linestyle=":", linewidth=1)
    ax.text(sizes[0], ceiling, " missed (end of run)", va="bottom", fontsize=8, color="grey")
    condition = sweep[0].condition
    ax.set_title(f"Operating characteristic: {sweep[0].kind} effect from {_at(sweep[0].at)}, condition {condition}")
    ax.set_xlabel(f"{sweep[0].kind} effect size")
    ax.set_ylabel("delay after the change (min)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _minutes(seconds: float | None, ceiling: float) -> float:
    if seconds is None or not math.isfinite(seconds):
        return ceiling
    return seconds / 60


def _plot_reactions(ax: Any, results: list[StudyResult]) -> None:
    """Share of tests cut back by each time: since the start (A/A) or since the change (regressions)."""
    longest = 0.0
    for result in results:
        horizon = result.spec.config.hours
        if result.spec.effects:
            effect = result.spec.effects[0]
            values = detection(result, effect).cutback.values
            label = f"{result.spec.name} (from {_at(effect.at)}): first cut-back after the change"
            horizon -= effect.at / 3600
        else:
            values = tuple(false_cutbacks_first(run) for run in result.runs)
            label = f"{result.spec.name}: first (false) cut-back"
        if not values:
            continue
        finite = sorted(v / 3600 for v in values if math.isfinite(v))
        shares = [(i + 1) / len(values) for i in range(len(finite))]
        ax.step([0.0, *finite, horizon], [0.0, *shares, shares[-1] if shares else 0.0], where="post", label=label)
        longest = max(longest, horizon)
    ax.set_xlim(0, longest or None)
    ax.set_title("Share of tests cut back, by time (A/A: since the start; regressions: since the change)")
    ax.set_xlabel("hours")
    ax.set_ylabel("share of tests")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def false_cutbacks_first(run: TestRun) -> float:
    index = (run.actions >= CUT_BACK).nonzero()[0]
    return float(run.times[index[0]]) if len(index) else math.inf


def _plot_timeline(axes: tuple[Any, Any, Any], run: TestRun, result: StudyResult, spec: StudySpec) -> None:
    score_ax, condition_ax, traffic_ax = axes
    hours = run.times / 3600
    cut = run.actions >= CUT_BACK
    score_ax.plot(hours, run.scores, color="black", linewidth=0.8, label="risk score")
    score_ax.scatter(hours[cut], run.scores[cut], s=8, color="tab:red", label="cut-back decision", zorder=3)
    score_ax.set_ylabel("risk score")
    score_ax.set_ylim(0, 1)
    score_ax.set_title(f"Example: test 0 of '{spec.name}' (seed {spec.seed}), every decision")
    names = result.conditions
    grid = [[2 if run.critical[i] >> bit & 1 else 1 if run.triggered[i] >> bit & 1 else 0 for i in range(len(hours))]
            for bit in range(len(names))]  # fmt: skip
    from matplotlib.colors import ListedColormap  # noqa: PLC0415  # see plot()

    span = float(hours[-1] - hours[0]) + run.interval / 3600
    extent = (float(hours[0]) - run.interval / 3600, float(hours[0]) - run.interval / 3600 + span, len(names), 0)
    condition_ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap=ListedColormap(["#f2f2f2", "tab:orange", "tab:red"]),
        vmin=0,
        vmax=2,
        extent=extent,
    )
    condition_ax.set_yticks([i + 0.5 for i in range(len(names))], names, fontsize=8)
    condition_ax.set_title("conditions triggered (orange) or critical (red)", fontsize=9)
    traffic_ax.step(hours, run.targets, where="post", color="tab:green", label="target traffic")
    traffic_ax.axhline(spec.config.rollout, color="grey", linestyle=":", linewidth=1, label="rollout")
    traffic_ax.set_ylabel("challenger %")
    traffic_ax.set_xlabel("hours since the test started")
    traffic_ax.set_ylim(bottom=0)
    for effect in spec.effects:
        for ax in axes:
            ax.axvline(effect.at / 3600, color="tab:purple", linestyle="--", linewidth=1)
    score_ax.legend(fontsize=8, loc="upper left")
    traffic_ax.legend(fontsize=8, loc="lower left")
    for ax in axes:
        ax.set_xlim(0, spec.config.hours)


def _at(seconds: float) -> str:
    return "the start" if seconds == 0 else f"{seconds / 3600:g} h"
