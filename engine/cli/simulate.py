"""`abguard simulate`: synthetic A/A and regression studies through the real engine, to measure a
policy's false cut-backs per test-day and its detection delays (docs/simulation.md)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import IO, Any

import orjson

from ..pipeline import Evaluator
from ..policy.model import Policy
from ..policy.policyset import DEFAULT_PROFILE
from ..simulation import (
    Delays,
    Detection,
    Effect,
    EffectError,
    FalseCutBacks,
    PolicySource,
    StreamConfig,
    StudyResult,
    StudySpec,
    TestRun,
    detection,
    false_cutbacks,
    parse_effect,
    parse_sweep,
    run_studies,
    run_test,
    standard_studies,
)
from ..simulation.effects import format_at
from ..simulation.generator import SHAPES
from ..simulation.runner import CUT_BACK
from .common import UsageError, load_policy, positive_int

OK, FINDINGS, USAGE = 0, 1, 2
DEFAULTS: dict[str, Any] = {
    "tests": 20,
    "hours": 6.0,
    "interval": 30.0,
    "label_rate": 10.0,
    "traffic": "constant",
    "rps": 42_000.0,
    "rollout": 10.0,
    "accuracy": 0.88,
}
SCENARIO_FLAGS = {**{key: f"--{key.replace('_', '-')}" for key in DEFAULTS}, "effects": "--effect", "oc": "--oc"}


def _number(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Any:
    """argparse `type=`: a finite number within low..high (ends open where asked)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not math.isfinite(value) or not inside:
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be a number in {span}, got {text!r}")
        return value

    return parse


def _effect(text: str) -> Effect:
    try:
        return parse_effect(text)
    except EffectError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _sweep(text: str) -> list[Effect]:
    try:
        return parse_sweep(text)
    except EffectError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def add_parser(commands: Any) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="synthetic A/A and regression tests through the engine: false cut-backs per test-day, detection delays",
        description="Runs seeded synthetic tests through the real engine under the effective policy. With no "
        "--effect it is an A/A study (false cut-backs per test-day); with --effect a regression study (delay "
        "from the change to the first cut-back and to the named condition); --oc sweeps one effect's size.",
    )
    scenario = simulate.add_argument_group("scenario (defaults in brackets)")
    scenario.add_argument("--tests", type=positive_int, metavar="N", help="tests per study [20]")
    scenario.add_argument("--hours", type=_number(0, 24 * 365, low_open=True), metavar="H", help="test length [6]")
    scenario.add_argument(
        "--interval", type=_number(0, 86_400, low_open=True), metavar="S", help="seconds between snapshots [30]"
    )
    scenario.add_argument("--label-rate", type=_number(0, 1e6), metavar="R", help="labels per second per arm [10]")
    scenario.add_argument("--traffic", choices=SHAPES, help="traffic shape [constant]")
    scenario.add_argument("--rps", type=_number(0, 1e9, low_open=True), help="requests/s of both arms [42000]")
    scenario.add_argument(
        "--rollout", type=_number(0, 100, True, True), metavar="PERCENT", help="challenger's traffic share [10]"
    )
    scenario.add_argument("--accuracy", type=_number(0, 1), help="champion's accuracy [0.88]")
    scenario.add_argument(
        "--effect", dest="effects", action="append", type=_effect, metavar="SPEC",
        help="kind:size[@start] on the challenger, repeatable: accuracy:-0.07@2h, latency:+0.6@0, "
        "error_rate:+2@30m, confidence:0.2@1h",
    )  # fmt: skip
    scenario.add_argument(
        "--oc", "--sizes", dest="oc", type=_sweep, metavar="SWEEP",
        help="operating characteristic: one study per size, e.g. accuracy:-0.02,-0.05,-0.07,-0.10@1h",
    )  # fmt: skip
    scenario.add_argument(
        "--standard", action="store_true", help="the standard study of `make quality` (docs/simulation.md)"
    )
    simulate.add_argument("--seed", type=_seed, default=0, help="test i uses seed + i (default 0)")
    simulate.add_argument(
        "--policies", "--policy", dest="policies", default="policies", metavar="DIR",
        help="policy folder (default: policies)",
    )  # fmt: skip
    simulate.add_argument("--profile", default=DEFAULT_PROFILE, help="profile overlay, or 'none' (default: balanced)")
    simulate.add_argument("--env", default=None, help="environment overlay (dev, staging, prod)")
    simulate.add_argument("--workers", type=positive_int, default=1, help="processes (default 1)")
    simulate.add_argument("--format", choices=("table", "json"), default="table")
    simulate.add_argument("--plot", metavar="PATH.png", help="write the operating characteristic and a timeline")
    simulate.set_defaults(run=run)


def studies_of(args: argparse.Namespace) -> tuple[list[StudySpec], list[Effect] | None]:
    """The studies the flags ask for, and the sweep's effects when it is an operating characteristic."""
    if args.standard:
        given = [flag for key, flag in SCENARIO_FLAGS.items() if getattr(args, key) is not None]
        if given:
            raise UsageError(f"--standard fixes the scenario: drop {', '.join(given)}")
        return standard_studies(args.seed), None
    settings = {key: default if getattr(args, key) is None else getattr(args, key) for key, default in DEFAULTS.items()}
    tests = settings.pop("tests")
    base = StreamConfig(**settings, effects=tuple(args.effects or ()))
    if args.oc:
        kinds = {effect.kind for effect in base.effects}
        if args.oc[0].kind in kinds:
            raise UsageError(f"--oc sweeps {args.oc[0].kind}, which --effect already sets: drop one")
        specs = [
            StudySpec(_name((*base.effects, effect)), replace(base, effects=(*base.effects, effect)), tests, args.seed)
            for effect in args.oc
        ]
        configs = [spec.config for spec in specs]
    else:
        specs = [StudySpec(_name(base.effects), base, tests, args.seed)]
        configs = [base]
    for config in configs:
        try:
            config.check()
        except ValueError as error:
            raise UsageError(str(error)) from None
    return specs, args.oc


def _name(effects: tuple[Effect, ...]) -> str:
    return " + ".join(effect.spec for effect in effects) if effects else "A/A"


def run(args: argparse.Namespace) -> int:
    studies, sweep = studies_of(args)
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot writes a PNG: give a path ending in .png, got {args.plot!r}")
    policy = load_policy(args.policies, args.profile, args.env)
    if policy is None:
        return FINDINGS
    source = PolicySource(args.policies, args.profile, args.env)
    started = time.perf_counter()
    results = run_studies(source, studies, args.workers, policy)
    elapsed = time.perf_counter() - started
    report = build_report(policy, args.seed, results, sweep, elapsed, args.workers)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(report, sys.stdout)
    if args.plot is not None:
        try:
            plot(args.plot, policy, results, sweep)
        except OSError as error:
            print(f"abguard simulate: cannot write {args.plot}: {error.strerror}", file=sys.stderr)
            return USAGE
    return OK


# --- the report: one dict, printed as JSON or as the table --------------------------------------------


def build_report(
    policy: Policy,
    seed: int,
    results: list[StudyResult],
    sweep: list[Effect] | None,
    elapsed: float,
    workers: int,
) -> dict[str, Any]:
    studies = []
    for result in results:
        config = result.spec.config
        entry: dict[str, Any] = {
            "name": result.spec.name,
            "tests": result.spec.tests,
            "hours": config.hours,
            "interval_s": config.interval,
            "rps": config.rps,
            "rollout_percent": config.rollout,
            "traffic": config.traffic,
            "label_rate": config.label_rate,
            "accuracy": config.accuracy,
            "effects": [effect.spec for effect in config.effects],
            "test_days": sum(run.steps * run.interval for run in result.runs) / 86_400,
            "false_cutbacks": None,
            "conditions_triggered_share": None,
            "detections": [],
        }
        if not config.effects:
            found = false_cutbacks(result)
            entry["false_cutbacks"] = _false(found)
            entry["conditions_triggered_share"] = found.triggered_share
        entry["detections"] = [_detection(detection(result, effect)) for effect in config.effects]
        studies.append(entry)
    oc = None
    if sweep:
        points = []
        for effect, entry in zip(sweep, studies, strict=True):
            found = next(d for d in entry["detections"] if d["effect"] == effect.spec)
            points.append(
                {
                    "size": effect.size,
                    "cutback_delay": found["cutback_delay"],
                    "condition_delay": found["condition_delay"],
                }
            )
        oc = {"kind": sweep[0].kind, "start_s": sweep[0].at, "condition": sweep[0].condition, "points": points}
    return {
        "policy": {
            "name": policy.name,
            "version": policy.version,
            "digest": policy.digest,
            "profile": policy.profile,
            "environment": policy.environment,
        },
        "seed": seed,
        "workers": workers,
        "elapsed_s": round(elapsed, 1),
        "studies": studies,
        "operating_characteristic": oc,
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _false(found: FalseCutBacks) -> dict[str, Any]:
    return {
        "episodes": found.rate.count,
        "days_at_risk": found.rate.days,
        "per_test_day": found.rate.rate,
        "ci95": [found.rate.low, found.rate.high],
        "tests": found.tests,
        "tests_cut_back": found.tests_cut_back,
        "decisions": found.decisions,
        "cutback_decisions": found.cutback_decisions,
        "first_cutback_median_s": _finite(found.first_median),
        "first_cutback_by": found.first_by,
        "first_cutback_conditions": found.first_conditions,
        "first_cutback_indicators": found.first_indicators,
    }


def _delays(found: Delays) -> dict[str, Any]:
    return {
        "tests": found.tests,
        "already": found.already,
        "detected": found.detected,
        "missed": found.missed,
        "median_s": _finite(found.median),
        "p90_s": _finite(found.p90),
        "max_s": found.max,
    }


def _detection(found: Detection) -> dict[str, Any]:
    return {
        "effect": found.effect.spec,
        "kind": found.effect.kind,
        "size": found.effect.size,
        "start_s": found.effect.at,
        "condition": found.condition,
        "cutback_delay": _delays(found.cutback),
        "condition_delay": _delays(found.condition_delay),
        "false_cutbacks_before_change": _false(found.before_change) if found.before_change else None,
    }


def duration(seconds: float | None, missed: bool = False) -> str:
    """30 s, 7.5 min, 2.3 h; 'missed' for a quantile that fell on tests with no reaction."""
    if seconds is None:
        return "missed" if missed else "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_table(report: dict[str, Any], out: IO[str]) -> None:
    p = report["policy"]
    print(
        f"policy {p['name']} v{p['version']} {p['digest'][:19]}..., profile {p['profile'] or 'none'}, "
        f"environment {p['environment'] or 'none'}; seed {report['seed']} (test i uses seed + i); "
        f"{report['elapsed_s']:g} s on {report['workers']} worker(s)",
        file=out,
    )
    studies = report["studies"]
    healthy = [s for s in studies if s["false_cutbacks"] is not None]
    sick = [s for s in studies if s["detections"]]
    if healthy:
        print("\nFalse cut-backs of healthy tests (A/A): episodes per test-day at risk, exact 95% interval", file=out)
        header = ("study", "traffic", "tests x h", "test-days", "at risk", "episodes", "per test-day [95% CI]",
                  "tests cut back", "cut-back decisions", "first cut-back")  # fmt: skip
        rows: list[tuple[str, ...]] = [header]
        for s in healthy:
            f = s["false_cutbacks"]
            rows.append((
                s["name"],
                _traffic(s),
                f"{s['tests']} x {s['hours']:g}",
                f"{s['test_days']:.1f}",
                f"{f['days_at_risk']:.1f}",
                str(f["episodes"]),
                f"{f['per_test_day']:.2f} [{f['ci95'][0]:.2f}, {f['ci95'][1]:.2f}]",
                f"{f['tests_cut_back']}/{f['tests']}",
                f"{f['cutback_decisions']} ({f['cutback_decisions'] / max(1, f['decisions']):.1%})",
                duration(f["first_cutback_median_s"], f["tests_cut_back"] < f["tests"]) + " (median)",
            ))  # fmt: skip
        _grid(rows, out)
        for s in healthy:
            f = s["false_cutbacks"]
            print(f"  {s['name']}:", file=out)
            if f["first_cutback_by"]:
                print(f"    episodes started by: {_counts(f['first_cutback_by'])}", file=out)
                print(f"    conditions triggered when they started: {_counts(f['first_cutback_conditions'])}", file=out)
                print(f"    indicators counting when they started: {_counts(f['first_cutback_indicators'])}", file=out)
            shares = sorted(s["conditions_triggered_share"].items(), key=lambda kv: -kv[1])
            print(
                "    conditions triggered, share of decisions: "
                + ", ".join(f"{name} {share:.1%}" for name, share in shares),
                file=out,
            )
    if sick:
        print(
            "\nRegressions: delay from the change to the first cut-back, and to the effect's condition triggered"
            "\n(median and p90 count a miss as infinite; max is of the detected; 'already' = in that state just "
            "before the change, not measured)",
            file=out,
        )
        rows = [("effect", "start", "tests", "false cut-backs before", "cut-back: median", "p90", "max",
                 "missed", "already", "condition", "median", "p90", "max", "missed", "already")]  # fmt: skip
        for s in sick:
            for d in s["detections"]:
                before = d["false_cutbacks_before_change"]
                rows.append((
                    s["name"] if len(s["detections"]) == 1 else f"{s['name']}: {d['kind']}",
                    format_at(d["start_s"]),
                    str(s["tests"]),
                    "-" if before is None else f"{before['tests_cut_back']}/{before['tests']} tests",
                    *_delay_cells(d["cutback_delay"]),
                    d["condition"],
                    *_delay_cells(d["condition_delay"]),
                ))  # fmt: skip
        _grid(rows, out)
        print(
            "  traffic: " + "; ".join(sorted({f"{_traffic(s)}, {s['tests']} tests x {s['hours']:g} h" for s in sick})),
            file=out,
        )


def _traffic(s: dict[str, Any]) -> str:
    text = f"{s['traffic']}, {s['label_rate']:g} labels/s"
    if s["accuracy"] != DEFAULTS["accuracy"]:
        text += f", champion {s['accuracy']:g}"
    return text


def _delay_cells(d: dict[str, Any]) -> tuple[str, str, str, str, str]:
    measured = d["tests"]
    return (
        duration(d["median_s"], measured > 0),
        duration(d["p90_s"], measured > 0),
        duration(d["max_s"]),
        f"{d['missed']}/{measured}",
        str(d["already"]),
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def _grid(rows: Sequence[tuple[str, ...]], out: IO[str]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)


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
