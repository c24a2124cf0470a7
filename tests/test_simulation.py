"""`abguard simulate` and engine/simulation: valid seeded streams, honest counts, the Garwood interval, the CLI."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from engine.cli import main
from engine.contract import Action, parse_snapshot
from engine.pipeline import Evaluator
from engine.simulation import (
    Effect,
    EffectError,
    PolicySource,
    StreamConfig,
    StudyResult,
    StudySpec,
    detection,
    false_cutbacks,
    garwood,
    parse_effect,
    parse_sweep,
    run_studies,
    run_test,
    stream,
)
from engine.simulation.generator import BOUNDS, confidence_ks
from engine.simulation.metrics import episode_starts

ROOT = Path(__file__).resolve().parent.parent
SOURCE = PolicySource(str(ROOT / "policies"))
CUT_BACK = {Action.REDUCE_ROLLOUT, Action.ROLLBACK, Action.IMMEDIATE_ROLLBACK}


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(SOURCE.load())


@pytest.fixture(scope="module")
def peeking(tmp_path_factory: pytest.TempPathFactory) -> PolicySource:
    """The default policy with sudden_drop on the 15-minute window's relative drop, re-tested at a
    fixed level on every snapshot: the peeking design that cuts back healthy tests."""
    folder = tmp_path_factory.mktemp("peeking") / "policies"
    shutil.copytree(ROOT / "policies", folder)
    default = folder / "default.yaml"
    text = default.read_text()
    assert text.count("when: accuracy.drop_alarm >= 1\n") == 1
    default.write_text(text.replace("when: accuracy.drop_alarm >= 1\n", "when: accuracy.relative_drop > 0.02\n"))
    return PolicySource(str(folder))


def totals(config: StreamConfig, seed: int, arm: str, key: str, after: float = 0.0) -> int:
    """The sum of one arm's count over the snapshots whose interval ends after `after` seconds."""
    rows = list(stream(config, "t", seed))
    return sum(row[arm][key] for step, row in enumerate(rows) if (step + 1) * config.interval > after)


STREAMS = [
    StreamConfig(hours=0.5),
    StreamConfig(hours=0.5, traffic="diurnal", label_rate=0),
    StreamConfig(hours=0.5, rollout=1, label_rate=100, interval=7.5),
    StreamConfig(hours=0.5, rollout=99, label_rate=0.01, interval=300),
    StreamConfig(hours=0.5, rps=3, label_rate=1000, accuracy=1.0),  # labels capped by the few requests
    StreamConfig(
        hours=0.5,
        traffic="diurnal",
        accuracy=0.95,
        effects=(
            parse_effect("accuracy:-0.5@10m"),
            parse_effect("latency:+9@0"),
            parse_effect("error_rate:+20@5m"),
            parse_effect("confidence:0.85@15m"),
        ),
    ),
]


@pytest.mark.parametrize("config", STREAMS, ids=[f"stream{i}" for i in range(len(STREAMS))])
def test_every_generated_snapshot_parses(config: StreamConfig) -> None:
    """Every snapshot of every shape, extreme and effect, for several seeds, is accepted by parse_snapshot."""
    for seed in (0, 1, 99):
        rows = list(stream(config, "sim", seed))
        assert len(rows) == config.steps
        for row in rows:
            snapshot = parse_snapshot(row)
            for arm in (snapshot.champion, snapshot.challenger):
                assert sum(arm.latency.counts) == arm.requests  # type: ignore[union-attr]
                assert arm.labeled is not None and arm.labeled <= arm.requests
        assert [parse_snapshot(r).timestamp for r in rows] == sorted({parse_snapshot(r).timestamp for r in rows})


def test_generation_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same stream, another seed another, and a longer run starts with the shorter one."""
    config = StreamConfig(hours=1, traffic="diurnal", effects=(parse_effect("latency:+0.6@30m"),))
    assert list(stream(config, "t", 7)) == list(stream(config, "t", 7))
    assert list(stream(config, "t", 7)) != list(stream(config, "t", 8))
    longer = list(stream(replace(config, hours=3.3), "t", 7))
    assert longer[: config.steps] == list(stream(config, "t", 7))


def test_aa_arms_have_the_same_accuracy_and_an_accuracy_effect_shows_in_the_counts() -> None:
    """A/A arms agree within sampling error; accuracy:-0.1@1h leaves the first hour alone and then scales it by 0.9."""
    aa = StreamConfig(hours=2, label_rate=100)
    labeled = [totals(aa, 3, arm, "labeled") for arm in ("champion", "challenger")]
    correct = [totals(aa, 3, arm, "correct") for arm in ("champion", "challenger")]
    p = [c / n for c, n in zip(correct, labeled, strict=True)]
    se = math.sqrt(0.88 * 0.12 * (1 / labeled[0] + 1 / labeled[1]))
    assert abs(p[0] - p[1]) < 4 * se
    assert abs(p[0] - 0.88) < 4 * math.sqrt(0.88 * 0.12 / labeled[0])

    bad = replace(aa, effects=(parse_effect("accuracy:-0.1@1h"),))
    rows = list(stream(bad, "t", 3))
    before = rows[:120]
    after = rows[120:]
    for part, expected in ((before, 0.88), (after, 0.88 * 0.9)):
        n = sum(r["challenger"]["labeled"] for r in part)
        share = sum(r["challenger"]["correct"] for r in part) / n
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (share, expected)
        champion = sum(r["champion"]["correct"] for r in part) / sum(r["champion"]["labeled"] for r in part)
        assert abs(champion - 0.88) < 0.005


def test_latency_error_and_confidence_effects_show_in_the_challenger_only() -> None:
    """latency:+0.6 moves the challenger's histogram up, error_rate:+2 triples its errors, confidence:0.2 is KS 0.2."""
    config = StreamConfig(
        hours=1,
        effects=(parse_effect("latency:+0.6@0"), parse_effect("error_rate:+2@0"), parse_effect("confidence:0.2@0")),
    )
    rows = list(stream(config, "t", 1))

    def summed(arm: str, key: str) -> np.ndarray:
        return np.asarray(np.sum([np.asarray(r[arm][key]) for r in rows], axis=0))

    def latency(arm: str) -> np.ndarray:
        return np.asarray(np.sum([r[arm]["latency_ms"]["counts"] for r in rows], axis=0))

    champion_requests, challenger_requests = summed("champion", "requests"), summed("challenger", "requests")
    above_2ms = [latency(arm)[BOUNDS.index(2.0) + 1 :].sum() / total
                 for arm, total in (("champion", champion_requests), ("challenger", challenger_requests))]  # fmt: skip
    assert above_2ms[0] < 0.03 and above_2ms[1] > 0.2
    errors = [sum(sum(r[arm]["errors"].values()) for r in rows) / total
              for arm, total in (("champion", champion_requests), ("challenger", challenger_requests))]  # fmt: skip
    assert errors[0] == pytest.approx(0.01, rel=0.02)
    assert errors[1] == pytest.approx(0.03, rel=0.02)
    bins = [summed(arm, "confidence_histogram") for arm in ("champion", "challenger")]
    ks = np.max(np.abs(np.cumsum(bins[0]) / bins[0].sum() - np.cumsum(bins[1]) / bins[1].sum()))
    assert ks == pytest.approx(0.2, abs=0.01)
    assert confidence_ks(0.2) == pytest.approx(0.2, abs=1e-6)


def test_effect_specs_read_back_and_bad_ones_name_themselves() -> None:
    """accuracy:-0.07@2h and friends parse (s, m, h, bare seconds); a bad spec's error quotes it."""
    assert parse_effect("accuracy:-0.07@2h") == Effect("accuracy", -0.07, 7200.0)
    assert parse_effect("latency:+0.6@0") == Effect("latency", 0.6, 0.0)
    assert parse_effect("error_rate:2") == Effect("error_rate", 2.0, 0.0)
    assert parse_effect("confidence:0.2@90m").at == 5400.0
    assert parse_effect("latency:.5@600").at == parse_effect("latency:0.5@600s").at == 600.0
    for effect in (Effect("accuracy", -0.07, 7200.0), Effect("confidence", 0.25, 45.0)):
        assert parse_effect(effect.spec) == effect
    assert [e.size for e in parse_sweep("accuracy:-0.02,-0.05,-0.1@1h")] == [-0.02, -0.05, -0.1]
    for bad in ("accuracy", "speed:0.1", "accuracy:-1", "accuracy:x@1h", "confidence:0.95", "latency:0.1@2d"):
        with pytest.raises(EffectError, match=repr(bad).replace(".", r"\.")):
            parse_effect(bad)


@pytest.mark.parametrize(("count", "low", "high"), [(0, 0.0, 3.689), (1, 0.0253, 5.572), (2, 0.2422, 7.225),
                                                    (10, 4.795, 18.39), (100, 81.36, 121.6)])  # fmt: skip
def test_garwood_interval_matches_the_tables_and_the_poisson_definition(count: int, low: float, high: float) -> None:
    """The exact interval is the published one, and its ends are where P(X >= k) and P(X <= k) are 2.5%."""
    got_low, got_high = garwood(count)
    assert got_low == pytest.approx(low, abs=5e-4, rel=1e-3)
    assert got_high == pytest.approx(high, rel=1e-3)
    if count:
        assert stats.poisson.sf(count - 1, got_low) == pytest.approx(0.025, rel=1e-6)
    else:
        assert got_high == pytest.approx(-math.log(0.025))
    assert stats.poisson.cdf(count, got_high) == pytest.approx(0.025, rel=1e-6)


def test_an_obvious_regression_is_caught_quickly(evaluator: Evaluator) -> None:
    """accuracy -30% at 100 labels/s from 20 min: cut back within 5 min and rolled back (critical), every test.

    Measured with the default policy: 2.0 min after the change in every test (30 s when bad from the start)."""
    effect = parse_effect("accuracy:-0.3@20m")
    spec = StudySpec("obvious", StreamConfig(hours=1, label_rate=100, effects=(effect,)), tests=5, seed=11)
    (study,) = run_studies(SOURCE, [spec], policy=evaluator.policy)
    found = detection(study, effect)
    assert found.cutback.detected == 5 and found.cutback.max is not None and found.cutback.max <= 300
    assert found.condition_delay.max is not None and found.condition_delay.max <= 300
    for run in study.runs:
        assert Action.IMMEDIATE_ROLLBACK.rank in run.actions[run.times > effect.at].tolist()


def test_the_runner_reports_what_the_decisions_say(peeking: PolicySource) -> None:
    """A seeded A/A run: episodes, at-risk days, tests and decisions recounted from the engine's own decisions."""
    evaluator = Evaluator(peeking.load())
    config = StreamConfig(hours=3, label_rate=2, traffic="diurnal")
    spec = StudySpec("aa", config, tests=3, seed=5)
    (study,) = run_studies(peeking, [spec], policy=evaluator.policy)
    episodes = at_risk = cut = with_any = 0
    for index in range(3):
        evaluator.restart("check")
        actions = [evaluator.evaluate(parse_snapshot(row)).action for row in stream(config, "check", 5 + index)]
        flags = [a in CUT_BACK for a in actions]
        starts = sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))
        episodes += starts
        at_risk += sum(1 for i in range(len(flags)) if i == 0 or not flags[i - 1])
        cut += sum(flags)
        with_any += starts > 0
        assert study.runs[index].actions.tolist() == [a.rank for a in actions]
    found = false_cutbacks(study)
    assert found.rate.count == episodes and episodes > 0  # the peeking policy cuts back healthy tests
    assert found.rate.days == pytest.approx(at_risk * 30 / 86_400)
    assert (found.tests_cut_back, found.cutback_decisions, found.decisions) == (with_any, cut, 3 * config.steps)
    assert found.rate.low < found.rate.rate < found.rate.high
    assert sum(found.first_by.values()) == episodes


def test_stopping_at_a_rollback_changes_no_number(evaluator: Evaluator) -> None:
    """A rolled-back test stops early; its implied `rollback`s give the same counts and delays as deciding them all."""
    effect = parse_effect("accuracy:-0.3@30m")
    config = StreamConfig(hours=1.5, label_rate=100, effects=(effect,))
    runs = [run_test(evaluator, config, 0, 4, stop=flag) for flag in (True, False)]
    short, full = runs
    assert short.implied > 0 and full.implied == 0
    assert np.all(full.actions[len(short.times) :] == Action.ROLLBACK.rank)
    made = [StudyResult(StudySpec("x", config, 1, 4), tuple(c.name for c in evaluator.policy.conditions), [r])
            for r in runs]  # fmt: skip
    a, b = (false_cutbacks(m) for m in made)
    assert (a.rate.count, a.tests_cut_back, a.decisions, a.cutback_decisions) == (
        b.rate.count, b.tests_cut_back, b.decisions, b.cutback_decisions,
    )  # fmt: skip
    assert detection(made[0], effect) == detection(made[1], effect)
    assert len(episode_starts(short)) == len(episode_starts(full))


def test_two_worker_processes_give_the_same_runs(evaluator: Evaluator) -> None:
    """Workers load the policy themselves (spawn); the runs come back in test order, equal to one process's."""
    spec = StudySpec("w", StreamConfig(hours=0.5, label_rate=2, effects=(parse_effect("latency:+0.6@10m"),)), 4, 21)
    (one,) = run_studies(SOURCE, [spec], workers=1, policy=evaluator.policy)
    (two,) = run_studies(SOURCE, [spec], workers=2)
    assert [r.index for r in two.runs] == [0, 1, 2, 3]
    for a, b in zip(one.runs, two.runs, strict=True):
        assert a.actions.tolist() == b.actions.tolist()
        assert a.scores.tolist() == b.scores.tolist()
        assert a.triggered.tolist() == b.triggered.tolist()


def test_cli_prints_json_with_the_documented_keys_and_writes_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format json has the keys docs/simulation.md lists; --plot writes a PNG file."""
    picture = tmp_path / "study.png"
    code = main(
        ["simulate", "--tests", "2", "--hours", "0.75", "--label-rate", "100", "--effect", "accuracy:-0.3@15m",
         "--policies", str(ROOT / "policies"), "--format", "json", "--plot", str(picture)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"policy", "seed", "workers", "elapsed_s", "studies", "operating_characteristic"}
    assert set(report["policy"]) == {"name", "version", "digest", "profile", "environment"}
    (study,) = report["studies"]
    assert set(study) == {
        "name", "tests", "hours", "interval_s", "rps", "rollout_percent", "traffic", "label_rate", "accuracy",
        "effects", "test_days", "false_cutbacks", "conditions_triggered_share", "detections",
        "challenger_label_rate", "labels", "latency_model",
    }  # fmt: skip
    (found,) = study["detections"]
    assert set(found) == {"effect", "kind", "size", "start_s", "condition", "cutback_delay", "condition_delay",
                          "false_cutbacks_before_change", "cutback_delay_after_labels"}  # fmt: skip
    assert set(found["cutback_delay"]) == {"tests", "already", "detected", "missed", "median_s", "p90_s", "max_s"}
    assert found["cutback_delay"]["detected"] == 2 and found["cutback_delay"]["max_s"] <= 300
    assert set(found["false_cutbacks_before_change"]) == {
        "episodes", "days_at_risk", "per_test_day", "ci95", "tests", "tests_cut_back", "decisions",
        "cutback_decisions", "first_cutback_median_s", "first_cutback_by", "first_cutback_conditions",
        "first_cutback_indicators",
    }  # fmt: skip
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_aa_table_and_operating_characteristic(capsys: pytest.CaptureFixture[str]) -> None:
    """An A/A table states the rate with its interval; --oc gives one point per size in JSON."""
    policies = ["--policies", str(ROOT / "policies")]
    assert main(["simulate", "--tests", "2", "--hours", "0.5", *policies]) == 0
    out = capsys.readouterr().out
    assert "False cut-backs of healthy tests (A/A)" in out and "per test-day [95% CI]" in out
    sweep = ["--oc", "accuracy:-0.3,-0.5@10m", "--tests", "1", "--hours", "0.5", "--label-rate", "100"]
    assert main(["simulate", *sweep, *policies, "--format", "json"]) == 0
    oc = json.loads(capsys.readouterr().out)["operating_characteristic"]
    assert oc["kind"] == "accuracy" and oc["start_s"] == 600 and [p["size"] for p in oc["points"]] == [-0.3, -0.5]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--effect", "accuracy:-0.07@2x"], "'accuracy:-0.07@2x'"),
        (["--effect", "bogus:1"], "'bogus:1'"),
        (["--oc", "latency:0.1;0.2"], "'latency:0.1;0.2'"),
        (["--rollout", "100"], "--rollout"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_flags_are_the_verbs_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], named: str) -> None:
    """A bad --effect (or any bad flag) exits 2 with simulate's usage line and an error naming it."""
    with pytest.raises(SystemExit) as stopped:
        main(["simulate", *argv])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: abguard simulate ")
    assert named in err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accuracy", "0.99", "--effect", "accuracy:+0.5"], "accuracy:+0.5@0 makes the challenger's accuracy"),
        (["--standard", "--hours", "2"], "--standard fixes the scenario: drop --hours"),
        (["--oc", "latency:0.1,0.2", "--effect", "latency:0.3"], "--oc sweeps latency"),
        (["--plot", "out.jpg"], "give a path ending in .png"),
        (["--policies", "/no/such/folder"], "no such policy folder"),
    ],
)
def test_settings_that_cannot_run_exit_2_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Settings that parse but cannot give a study are one line on stderr, exit 2."""
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("abguard simulate: ") and message in err and len(err.splitlines()) == 1
