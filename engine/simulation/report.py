"""A study's results as one report: plain data for JSON, and the table a reviewer reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import IO, Any

from ..policy.model import Policy
from . import (
    Delays,
    Detection,
    Effect,
    FalseCutBacks,
    StudyResult,
    detection,
    false_cutbacks,
)
from .effects import format_at
from .generator import StreamConfig

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
            "challenger_label_rate": config.challenger_label_rate,
            "labels": config.labels,
            "latency_model": config.latency_model,
            "accuracy": config.accuracy,
            "effects": [effect.spec for effect in config.effects],
            "test_days": sum(run.steps * run.interval for run in result.runs) / 86_400,
            "false_cutbacks": None,
            "conditions_triggered_share": None,
            "detections": [],
        }
        harmful = [effect for effect in config.effects if effect.harmful]
        if not harmful:  # A/A, or only effects that leave the challenger no worse (a shared shift)
            found = false_cutbacks(result)
            entry["false_cutbacks"] = _false(found)
            entry["conditions_triggered_share"] = found.triggered_share
        entry["detections"] = [_detection(detection(result, effect)) for effect in harmful]
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
        "cutback_delay_after_labels": _delays(found.after_labels) if found.after_labels else None,
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
        for s in sick:
            for d in s["detections"]:
                late = d.get("cutback_delay_after_labels")
                if late:
                    median, p90, most, missed, _ = _delay_cells(late)
                    print(
                        f"  {s['name']} @{format_at(d['start_s'])}: from the first challenger labels that carry the"
                        f" change, cut-back median {median}, p90 {p90}, max {most}, missed {missed}",
                        file=out,
                    )


def _traffic(s: dict[str, Any]) -> str:
    text = f"{s['traffic']}, {s['label_rate']:g} labels/s"
    if s.get("challenger_label_rate") is not None:
        text += f" (challenger {s['challenger_label_rate']:g})"
    if s.get("labels", "prompt") != "prompt":
        text += f", {s['labels']} labels"
    if s.get("latency_model", "light") != "light":
        text += f", {s['latency_model']} latency"
    if s["rollout_percent"] != StreamConfig().rollout:
        text += f", challenger at {s['rollout_percent']:g}%"
    if s["accuracy"] != StreamConfig().accuracy:
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
