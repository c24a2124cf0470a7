"""`abguard simulate`: synthetic A/A and regression studies through the real engine, to measure a
policy's false cut-backs per test-day and its detection delays (docs/simulation.md)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from typing import Any

import orjson

from ..simulation import (
    Effect,
    EffectError,
    PolicySource,
    StreamConfig,
    StudySpec,
    parse_effect,
    parse_sweep,
    run_studies,
    standard_studies,
)
from ..simulation.generator import LABEL_DELIVERIES, LATENCY_MODELS, SHAPES
from ..simulation.report import build_report, print_table
from .common import UsageError, add_policy_selection, load_policy, positive_int
from .simulate_plot import plot

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
    "latency_model": "light",
    "challenger_label_rate": None,
    "labels": "prompt",
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
        "--latency-model", choices=LATENCY_MODELS,
        help="light: one lognormal; realistic: a heavy tail and GC pauses in both arms [light]",
    )  # fmt: skip
    scenario.add_argument(
        "--challenger-label-rate", type=_number(0, 1e6), metavar="R",
        help="labels per second of the challenger, when not --label-rate (a small challenger) [--label-rate]",
    )  # fmt: skip
    scenario.add_argument(
        "--labels", choices=LABEL_DELIVERIES,
        help="prompt: with their predictions; late: per arm, in bursts every 5-20 min, 10-30 min late [prompt]",
    )  # fmt: skip
    scenario.add_argument(
        "--effect", dest="effects", action="append", type=_effect, metavar="SPEC",
        help="kind:size[@start] on the challenger, repeatable: accuracy:-0.07@2h, latency:+0.6@0, "
        "error_rate:+2@30m, confidence:0.2@1h, tail:0.02@1h; shared:-0.1@1h changes both arms' accuracy",
    )  # fmt: skip
    scenario.add_argument(
        "--oc", "--sizes", dest="oc", type=_sweep, metavar="SWEEP",
        help="operating characteristic: one study per size, e.g. accuracy:-0.02,-0.05,-0.07,-0.10@1h",
    )  # fmt: skip
    scenario.add_argument(
        "--standard", action="store_true", help="the standard study of `make quality` (docs/simulation.md)"
    )
    simulate.add_argument("--seed", type=_seed, default=0, help="test i uses seed + i (default 0)")
    add_policy_selection(simulate)
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
    if args.plot is not None:  # before the report: a reader that stops early (| head) still gets the plot
        try:
            plot(args.plot, policy, results, sweep)
        except OSError as error:
            print(f"abguard simulate: cannot write {args.plot}: {error.strerror}", file=sys.stderr)
            return USAGE
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_table(report, sys.stdout)
    return OK
