"""Differential tests: the compiled durable_rules ruleset fires exactly when expr.evaluate() says so."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.contract import parse_snapshot
from engine.pipeline import Evaluator, asked_facts
from engine.policy import compiler
from engine.policy.catalog import FACTS
from engine.policy.compiler import compile_policy
from engine.policy.expr import Expr, ExprError, comparisons, dnf_branches, evaluate, facts_of, parse, to_source
from engine.policy.model import Condition, Indicator, Policy
from engine.policy.policyset import load_effective
from engine.rules.answers import Answers
from engine.rules.durable_adapter import CompiledRuleset, RulesetError
from engine.rules.registry import register

POLICIES = Path(__file__).resolve().parent.parent / "policies"
FACT_NAMES = ("accuracy.challenger", "accuracy.champion", "errors.rate", "latency.p95_ms")
RULE = "difftest.indicator"
MAX_BRANCHES = 60
ASSIGNMENTS_PER_RULESET = 20

# durable_rules keeps rulesets in process-wide state: every registration gets a fresh name.
_names = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _rules(expr: Expr, critical: bool) -> dict[str, Any]:
    """One indicator rule plus the catch-all, shaped as compiler.compile_policy shapes them."""
    return {
        RULE: {
            "all": [{"m": compiler.condition(expr)}],
            "pri": compiler.CRITICAL_PRIORITY if critical else compiler.INDICATOR_PRIORITY,
            "run": RULE,
        },
        compiler.CATCH_ALL: {
            "all": [{"m": {"$ex": {compiler.MARKER: 1}}}],
            "pri": compiler.CATCH_ALL_PRIORITY,
            "run": compiler.CATCH_ALL,
        },
    }


def _one_indicator_policy(name: str, expr: Expr, critical: bool) -> Policy:
    condition, indicator = RULE.split(".")
    return Policy(
        name=name,
        version=1,
        digest="sha256:" + "0" * 64,
        profile=None,
        environment=None,
        rollback_enabled=True,
        conditions=(
            Condition(
                name=condition,
                weight=1.0,
                window_seconds=60.0,
                min_samples=1,
                indicators=(Indicator(condition, indicator, to_source(expr), expr, 1.0, critical=critical),),
                actions=(),
                thresholds={},
            ),
        ),
        levels=(),
        rules=(),
    )


# --- generated expressions ------------------------------------------------------------------

# Inequalities mostly: equality on random floats is rarely true (boundary values make it so sometimes).
OPERATORS = st.sampled_from(["<", "<=", ">", ">=", "<", "<=", ">", ">=", "==", "!="])
NOTABLE = [0.0, 1.0, 0.5, 0.95, 0.1, 3.0, 1e-12, -1e-12, 1e-6, 1e9, -1e9, -1.0, 2.5]
NUMBERS = st.one_of(
    st.sampled_from(NOTABLE),
    st.floats(-2.0, 2.0),
    st.floats(-1e9, 1e9),
    st.floats(1e-12, 1e-6),
    st.floats(-1e-6, -1e-12),
)
# Non-zero, moderate factors keep every normalised number far from float overflow.
MAGNITUDES = st.one_of(st.sampled_from([0.5, 0.95, 1.0, 2.0, 1e-3, 1e3, 1.05]), st.floats(1e-3, 1e3))
FACTORS = st.tuples(MAGNITUDES, st.booleans()).map(lambda pair: -pair[0] if pair[1] else pair[0])
FACT = st.sampled_from(FACT_NAMES)


@st.composite
def comparison_text(draw: st.DrawFn) -> str:
    fact, op = draw(FACT), draw(OPERATORS)
    kind = draw(st.sampled_from(["value", "mirrored", "coefficient", "fact", "fact-factor", "both-scaled", "chained"]))
    if kind == "value":
        return f"{fact} {op} {draw(NUMBERS)!r}"
    if kind == "mirrored":
        return f"{draw(NUMBERS)!r} {op} {fact}"
    if kind == "coefficient":
        return f"{draw(FACTORS)!r} * {fact} {op} {draw(NUMBERS)!r}"
    if kind == "fact":
        return f"{fact} {op} {draw(FACT)}"
    if kind == "fact-factor":
        return f"{fact} {op} {draw(FACT)} * {draw(FACTORS)!r}"
    if kind == "both-scaled":
        return f"{draw(FACTORS)!r} * {fact} {op} {draw(FACTORS)!r} * {draw(FACT)}"
    low, high = sorted((draw(NUMBERS), draw(NUMBERS)))
    return f"{low!r} {draw(st.sampled_from(['<', '<=']))} {fact} {draw(st.sampled_from(['<', '<=']))} {high!r}"


def expression_text(depth: int) -> st.SearchStrategy[str]:
    """Comparisons joined by and/or/not, nested at most `depth` levels."""
    if depth == 0:
        return comparison_text()
    inner = expression_text(depth - 1)
    return st.one_of(
        comparison_text(),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: " and ".join(f"({i})" for i in items)),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: " or ".join(f"({i})" for i in items)),
        inner.map(lambda item: f"not ({item})"),
    )


def _value_strategy(expr: Expr) -> st.SearchStrategy[float | int]:
    """A fact value: notable, tiny, large, negative, or one of the expression's own bounds."""
    bounds = [leaf.value for leaf in comparisons(expr) if leaf.value is not None]
    options: list[st.SearchStrategy[Any]] = [
        st.sampled_from([*NOTABLE, -0.0, 0, 1, 3]),
        st.floats(-1.0, 1.0),
        st.floats(-1e9, 1e9),
        st.floats(1e-12, 1e-6),
        st.floats(-1e-6, -1e-12),
    ]
    if bounds:
        options.append(st.sampled_from(bounds))
    return st.one_of(options)


@st.composite
def assignments(draw: st.DrawFn, expr: Expr) -> dict[str, float]:
    """Values for FACT_NAMES, about a quarter of them missing (right-hand facts of comparisons too)."""
    values = _value_strategy(expr)
    facts: dict[str, float] = {}
    for name in FACT_NAMES:
        if draw(st.sampled_from([True, True, True, False])):
            facts[name] = draw(values)
    # Sometimes put one fact-vs-fact comparison exactly on its boundary: durable's $mul must agree.
    pairs = [leaf for leaf in comparisons(expr) if leaf.other is not None and leaf.other in facts]
    # (len(...) > 0, not `pairs and draw(...)`: mypy would take draw's type from the list on the left)
    if len(pairs) > 0 and draw(st.booleans()):
        leaf = draw(st.sampled_from(pairs))
        facts[leaf.fact] = facts[cast(str, leaf.other)] * leaf.factor  # pairs holds fact-vs-fact leaves only
    return facts


@settings(max_examples=60, deadline=None, database=None)
@given(text=expression_text(3), critical=st.booleans(), data=st.data())
def test_ruleset_fires_exactly_when_evaluate_is_true(text: str, critical: bool, data: st.DataObject) -> None:
    """For random expressions and fact values, the compiled rule fires iff evaluate() is true."""
    try:
        expr = parse(text, FACTS, {})
    except ExprError as error:
        # the only ways a generated expression may be refused: too long, or numbers that do not normalise
        assume(error.code not in ("expr-too-long", "expr-not-finite"))
        raise
    assume(dnf_branches(expr) <= MAX_BRANCHES)
    rules = _rules(expr, critical)
    name = _unique("difftest")
    if compiler.groups(expr) > compiler.MAX_GROUPS:
        # the validator refuses these (expr-too-nested): durable_rules must refuse them too, or the limit is wrong
        with pytest.raises(RulesetError, match="error code: 113"):
            CompiledRuleset(name, rules, compiler.CATCH_ALL, compiler.MARKER)
        return
    assert compile_policy(_one_indicator_policy(name, expr, critical)) == {f"{name}-v1-000000000000": rules}
    ruleset = CompiledRuleset(name, rules, compiler.CATCH_ALL, compiler.MARKER)
    for index in range(ASSIGNMENTS_PER_RULESET):
        facts = data.draw(assignments(expr), label=f"facts[{index}]")
        fired = ruleset.fire(facts)
        assert fired in ([], [RULE])
        assert (fired == [RULE]) == evaluate(expr, facts), f"{to_source(expr)} with {facts}"


def _alternating(depth: int, leaf: str) -> str:
    """`f > 1 and (f > 2 or (f > 3 and ...))`: one and/or group per level."""
    text = f"{leaf} > {depth + 1}"
    for level in range(depth, 0, -1):
        text = f"{leaf} > {level} {'and' if level % 2 else 'or'} ({text})"
    return text


def _or_of_pairs(pairs: int) -> str:
    """`(e > 0 and l > e * 2) or (e > 1 and l > e * 2) or ...`: a fact-vs-fact comparison inside each `and`."""
    return " or ".join(f"(errors.rate > {i} and latency.p95_ms > errors.rate * 2)" for i in range(pairs))


AT_LIMIT = [_alternating(15, "errors.rate"), _or_of_pairs(14)]
PAST_LIMIT = [_alternating(16, "errors.rate"), _or_of_pairs(15)]


@pytest.mark.parametrize("text", [*AT_LIMIT, *PAST_LIMIT, "accuracy.challenger < accuracy.champion"])
def test_group_limit_is_durable_rules_limit(text: str) -> None:
    """A rule compiles exactly when its condition has at most MAX_GROUPS and/or groups."""
    expr = parse(text, FACTS, {})
    rules = _rules(expr, False)
    name = _unique("difftest-groups")
    if compiler.groups(expr) > compiler.MAX_GROUPS:
        with pytest.raises(RulesetError, match="error code: 113"):
            CompiledRuleset(name, rules, compiler.CATCH_ALL, compiler.MARKER)
    else:
        ruleset = CompiledRuleset(name, rules, compiler.CATCH_ALL, compiler.MARKER)
        facts = {"errors.rate": 100.0, "latency.p95_ms": 500.0, "accuracy.challenger": 0.5, "accuracy.champion": 0.9}
        assert (ruleset.fire(facts) == [RULE]) == evaluate(expr, facts)


def test_group_limit_cases_sit_on_both_sides() -> None:
    """Else the test above could pass without touching the limit."""
    assert [compiler.groups(parse(text, FACTS, {})) for text in AT_LIMIT] == [compiler.MAX_GROUPS] * 2
    assert [compiler.groups(parse(text, FACTS, {})) for text in PAST_LIMIT] == [compiler.MAX_GROUPS + 1] * 2


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("errors.rate > 1e19", 2e19, id="large-fact-above-large-bound"),
        pytest.param("errors.rate == 1e19", 2e19, id="distinct-large-numbers-compare-equal"),
        pytest.param("errors.rate < 1e20", 5e19, id="large-fact-below-larger-bound"),
        pytest.param("errors.rate > 9.3e18", 1e300, id="huge-fact"),
        pytest.param("errors.rate < -1e19", -1e20, id="large-negative"),
    ],
)
def test_numbers_beyond_int64_range(text: str, value: float) -> None:
    """Magnitudes of 2**63 and beyond compare in durable_rules as they do in evaluate()."""
    expr = parse(text, FACTS, {})
    ruleset = CompiledRuleset(_unique("difftest-large"), _rules(expr, False), compiler.CATCH_ALL, compiler.MARKER)
    facts = {"errors.rate": value}
    assert (ruleset.fire(facts) == [RULE]) == evaluate(expr, facts)


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        pytest.param(
            "accuracy.challenger < 1.0 and accuracy.challenger < accuracy.champion",
            {"accuracy.challenger": 0.0},
            id="after-a-true-comparison-on-the-same-fact",
        ),
        pytest.param(
            "errors.rate < 1.0 and accuracy.challenger > accuracy.champion * 2",
            {"errors.rate": 0.0, "accuracy.challenger": 0.9},
            id="after-a-true-comparison-on-another-fact",
        ),
        pytest.param(
            "not (accuracy.challenger >= 1.0 or accuracy.challenger >= accuracy.champion)",
            {"accuracy.challenger": 0.1},
            id="negated-or",
        ),
        pytest.param(
            "accuracy.challenger < 1.0 and (errors.rate < accuracy.champion or errors.rate > 5)",
            {"accuracy.challenger": 0.1, "errors.rate": 0.5},
            id="inside-an-or",
        ),
    ],
)
def test_missing_referenced_fact_in_one_rule(text: str, facts: dict[str, float]) -> None:
    """`fact OP other * factor` with `other` missing is false in a conjunction, as evaluate() says."""
    expr = parse(text, FACTS, {})
    ruleset = CompiledRuleset(_unique("difftest-missing"), _rules(expr, False), compiler.CATCH_ALL, compiler.MARKER)
    assert (ruleset.fire(facts) == [RULE]) == evaluate(expr, facts)  # evaluate() is False for each case


# --- the shipped default policy -------------------------------------------------------------


@functools.cache
def _default_policy() -> tuple[Policy, CompiledRuleset]:
    policy = load_effective([str(POLICIES)])
    ((name, rules),) = compile_policy(policy).items()
    return policy, register(policy, {_unique(name): rules})


HEALTHY = {
    "accuracy.challenger": 0.93,
    "accuracy.champion": 0.92,
    "accuracy.relative_drop": -0.01,
    "accuracy.p_value": 0.6,
    "confidence.ks_p_value": 0.4,
    "confidence.ks_statistic": 0.02,
    "confidence.extreme_mass": 0.1,
    "confidence.calibration_gap": 0.01,
    "confidence.duplicate_increase": 0.0,
    "latency.mean_ms": 1.0,
    "latency.p95_ms": 1.5,
    "latency.mean_increase": 0.05,
    "latency.p95_increase": 0.1,
    "latency.pool_utilization": 0.3,
    "errors.rate": 0.001,
    "errors.extraction_rate": 0.0,
    "errors.serialization_rate": 0.0,
    "errors.timeout_rate": 0.0,
    "errors.cache_rate": 0.0,
    "errors.rising_windows": 0,
    "errors.retry_failure_rate": 0.0,
    "cache.hit_rate": 0.99,
    "cache.l2_hit_rate": 0.97,
    "cache.eviction_rate": 0.01,
    "cache.response_time_ms": 1.0,
    "throughput.service_rps": 40000.0,
    "throughput.relative_drop": 0.0,
    "throughput.queue_depth": 3,
    "throughput.cpu_utilization": 0.4,
    "throughput.memory_utilization": 0.5,
    "throughput.concurrent_requests": 200,
    "anomaly.confidence": 0.1,
    "anomaly.correlation_break": 0.0,
    "anomaly.iqr_outliers": 0,
    "anomaly.level_shift": 0.5,
    **{f"{stem}_alarm": 0 for stem in ("accuracy.drop", "accuracy.floor", "latency.increase", "confidence.drift")},
    **{f"{stem}_alarm": 0 for stem in ("errors.increase", "throughput.drop")},
}

# (id, facts, indicator ids that must be among those firing: the case exercises what it means to)
POLICY_CASES = [
    ("healthy", HEALTHY, set()),  # what fires here depends on the profile's bounds; it must only agree
    (
        "accuracy-regression",
        {
            **HEALTHY,
            "accuracy.challenger": 0.75,
            "accuracy.champion": 0.92,
            "accuracy.relative_drop": 0.18,
            "accuracy.p_value": 0.01,
            "accuracy.drop_alarm": 1,
            "accuracy.drop_estimate": 0.18,
            "accuracy.floor_alarm": 1,
        },
        {
            "accuracy.below_baseline",
            "accuracy.sudden_drop",
            "accuracy.below_threshold",
            "accuracy.significant_regression",
        },
    ),
    (
        "on-the-boundaries",
        {
            **HEALTHY,
            "errors.rate": 0.1,
            "latency.p95_ms": 6.0,
            "cache.hit_rate": 0.95,
            "errors.rising_windows": 3,
            "errors.increase_alarm": 1,
        },
        {
            "error_rate.total_high",
            "error_rate.above_baseline",
            "error_rate.error_storm",
            "error_rate.rising",
            "latency.p95_high",
            "latency.p95_critical",
            "cache_performance.hit_rate_low",
        },
    ),
    (
        "either-side-of-an-or",
        {**HEALTHY, "throughput.cpu_utilization": 0.3, "throughput.memory_utilization": 0.85},
        {"throughput.resources_high"},
    ),
    (
        "partial-facts",
        {"accuracy.challenger": 0.5, "accuracy.drop_alarm": 1, "throughput.service_rps": 100.0},
        {"accuracy.sudden_drop", "throughput.below_threshold"},
    ),
]


@pytest.mark.parametrize(("facts", "expected"), [pytest.param(f, e, id=i) for i, f, e in POLICY_CASES])
def test_default_policy_fires_what_evaluate_says(facts: dict[str, float], expected: set[str]) -> None:
    """The compiled default policy fires exactly the indicators whose expressions evaluate true, criticals first."""
    policy, ruleset = _default_policy()
    fired = ruleset.fire(facts)
    evaluated = {indicator.id for indicator in policy.indicators if evaluate(indicator.expr, facts)}
    assert len(fired) == len(set(fired))
    assert set(fired) == evaluated
    assert expected <= evaluated
    critical = {indicator.id for indicator in policy.indicators if indicator.critical}
    assert fired == sorted(fired, key=lambda rule: rule not in critical)  # stable: criticals lead


def test_default_policy_without_facts_fires_nothing() -> None:
    """With no facts at all, every comparison is false and no indicator fires (only the catch-all)."""
    policy, ruleset = _default_policy()
    assert ruleset.fire({}) == []
    assert not any(evaluate(indicator.expr, {}) for indicator in policy.indicators)


def _policy_facts() -> st.SearchStrategy[dict[str, float]]:
    policy, _ = _default_policy()
    bounds: dict[str, list[float]] = {}
    for indicator in policy.indicators:
        for leaf in comparisons(indicator.expr):
            if leaf.value is not None:
                bounds.setdefault(leaf.fact, []).append(leaf.value)
    names = sorted({name for indicator in policy.indicators for name in facts_of(indicator.expr)})
    values = {
        name: st.one_of(st.sampled_from(bounds.get(name, [0.0])), st.floats(-1.0, 1.0), st.floats(0.0, 1e5))
        for name in names
    }
    return st.fixed_dictionaries({}, optional=values)


@pytest.mark.parametrize(
    "facts",
    [
        pytest.param({"throughput.relative_drop": 0.3, "accuracy.challenger": 0.99}, id="with-throughput-degraded"),
        pytest.param({"errors.rate": 0.5, "accuracy.challenger": 0.99}, id="with-error-storm"),
    ],
)
def test_missing_referenced_fact_in_default_policy(facts: dict[str, float]) -> None:
    """Without accuracy.champion, accuracy.below_baseline does not fire, whatever else does."""
    # Today durable_rules fires accuracy.below_baseline (challenger < champion * ratio) here as well.
    policy, ruleset = _default_policy()
    evaluated = {indicator.id for indicator in policy.indicators if evaluate(indicator.expr, facts)}
    assert set(ruleset.fire(facts)) == evaluated


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_default_policy_random_facts(data: st.DataObject) -> None:
    """For random facts near the default policy's bounds, fired indicators equal those evaluating true."""
    policy, ruleset = _default_policy()
    facts = data.draw(_policy_facts(), label="facts")
    evaluated = {indicator.id for indicator in policy.indicators if evaluate(indicator.expr, facts)}
    assert set(ruleset.fire(facts)) == evaluated


# --- the answer cache (engine/rules/answers.py) -----------------------------------------------
@functools.cache
def _cached_default() -> Answers:
    """One cache across every example below, so most of them are answered from memory."""
    policy, ruleset = _default_policy()
    leaves = [leaf for indicator in policy.indicators for leaf in indicator.leaves]
    return Answers(ruleset, leaves, asked_facts(policy))


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_the_answer_cache_never_changes_what_fires(data: st.DataObject) -> None:
    """Random facts near the default policy's bounds: the cache's answer (a remembered one when the
    outcome vector was seen) equals durable_rules' own answer for these very facts."""
    answers = _cached_default()
    _, ruleset = _default_policy()
    facts = data.draw(_policy_facts(), label="facts")
    assert set(answers.fire(facts)) == set(ruleset.fire(facts))


def test_the_answer_cache_answers_the_scenarios_from_few_vectors_and_decides_the_same() -> None:
    """Every bundled scenario replayed with and without the cache: the same decisions, and durable_rules
    asked once per distinct outcome vector only."""
    policy, ruleset = _default_policy()
    rows = [
        json.loads(line) for path in sorted((POLICIES.parent / "scenarios").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]  # fmt: skip
    cached = Evaluator(policy, ruleset)
    plain = Evaluator(policy, ruleset)
    leaves = [leaf for indicator in policy.indicators for leaf in indicator.leaves]
    uncached = Answers(ruleset, leaves, plain.engine.asked, capacity=0)  # durable_rules asked every time
    plain.engine = dataclasses.replace(plain.engine, answers=uncached)
    for row in rows:
        snapshot = parse_snapshot(row)
        assert cached.evaluate(snapshot) == plain.evaluate(snapshot)
    assert 0 < cached.engine.answers.asked_durable == len(cached.engine.answers) < len(rows) // 10
    assert uncached.asked_durable == len(rows) and len(uncached) == 0  # the plain side really asked every time
