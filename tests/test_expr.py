"""The `when` expression parser: accepted forms and their normal form, rejections and their codes,
reference evaluation, DNF sizes, and a fuzz check that nothing but ExprError ever escapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policy.catalog import FACTS
from engine.policy.expr import (
    AllOf,
    AnyOf,
    Compare,
    Expr,
    ExprError,
    comparisons,
    dnf_branches,
    dnf_terms,
    evaluate,
    facts_of,
    parse,
    to_source,
)

THRESHOLDS: dict[str, float] = {
    "accuracy_threshold": 0.85,
    "baseline_ratio": 0.95,
    "cache_miss_threshold": 0.05,
    "latency_p95_threshold_ms": 3.0,
    "zero": 0.0,
    "flag": True,  # a bool is not a number, whatever Python says
}


def _parse(text: str) -> Expr:
    return parse(text, FACTS, THRESHOLDS)


# (id, text, normalised source)
ACCEPTED = [
    ("plain", "accuracy.challenger < 0.9", "accuracy.challenger < 0.9"),
    ("not-lt-becomes-ge", "not (accuracy.challenger < 1)", "accuracy.challenger >= 1"),
    ("not-le-becomes-gt", "not (accuracy.challenger <= 1)", "accuracy.challenger > 1"),
    ("not-gt-becomes-le", "not (accuracy.challenger > 1)", "accuracy.challenger <= 1"),
    ("not-ge-becomes-lt", "not (accuracy.challenger >= 1)", "accuracy.challenger < 1"),
    ("not-eq-becomes-ne", "not (errors.rate == 0.5)", "errors.rate != 0.5"),
    ("not-ne-becomes-eq", "not (errors.rate != 0.5)", "errors.rate == 0.5"),
    ("double-not-cancels", "not not errors.rate < 1", "errors.rate < 1"),
    ("coefficient-divided-out", "2 * errors.rate < 3", "errors.rate < 1.5"),
    ("coefficient-on-right", "errors.rate * 4 <= 1", "errors.rate <= 0.25"),
    ("division-by-number", "errors.rate / 2 > 0.1", "errors.rate > 0.2"),
    ("constant-left-mirrored-gt", "3 > errors.rate", "errors.rate < 3"),
    ("constant-left-mirrored-le", "0.5 <= errors.rate", "errors.rate >= 0.5"),
    ("constant-left-eq-unchanged", "0.5 == errors.rate", "errors.rate == 0.5"),
    ("chained", "0.1 < errors.rate < 0.5", "errors.rate > 0.1 and errors.rate < 0.5"),
    ("chained-negated", "not (0.1 < errors.rate < 0.5)", "errors.rate <= 0.1 or errors.rate >= 0.5"),
    (
        "chained-two-facts",
        "0 < accuracy.challenger < accuracy.champion",
        "accuracy.challenger > 0 and accuracy.challenger < accuracy.champion * 1",
    ),
    ("threshold-substituted", "accuracy.challenger < accuracy_threshold", "accuracy.challenger < 0.85"),
    ("threshold-constant-folding", "cache.hit_rate < 1 - cache_miss_threshold", "cache.hit_rate < 0.95"),
    ("threshold-times-number", "latency.p95_ms >= 2 * latency_p95_threshold_ms", "latency.p95_ms >= 6"),
    ("folded-parenthesised-sum", "errors.rate < (1 - cache_miss_threshold) * 2", "errors.rate < 1.9"),
    ("fact-vs-fact", "accuracy.challenger < accuracy.champion", "accuracy.challenger < accuracy.champion * 1"),
    (
        "fact-vs-fact-threshold-factor",
        "accuracy.challenger < accuracy.champion * baseline_ratio",
        "accuracy.challenger < accuracy.champion * 0.95",
    ),
    (
        "fact-vs-fact-left-coefficient",
        "accuracy.champion * 2 > accuracy.challenger",
        "accuracy.champion > accuracy.challenger * 0.5",
    ),
    ("negative-coefficient-flips", "-2 * errors.rate < 4", "errors.rate > -2"),
    ("unary-minus-flips", "-errors.rate >= -0.5", "errors.rate <= 0.5"),
    (
        "negative-coefficient-fact-vs-fact",
        "-accuracy.challenger < accuracy.champion * 2",
        "accuracy.challenger > accuracy.champion * -2",
    ),
    ("negative-coefficient-constant-left", "1 < -0.5 * errors.rate", "errors.rate < -2"),
    ("double-minus", "errors.rate < -(-2)", "errors.rate < 2"),
    ("unary-plus", "+errors.rate <= 1e3", "errors.rate <= 1000"),
    ("small-number-repr", "errors.rate < 1e-7", "errors.rate < 1e-07"),
    (
        "de-morgan-and",
        "not (errors.rate < 1 and errors.champion_rate > 2)",
        "errors.rate >= 1 or errors.champion_rate <= 2",
    ),
    (
        "de-morgan-or",
        "not (errors.rate < 1 or errors.champion_rate > 2)",
        "errors.rate >= 1 and errors.champion_rate <= 2",
    ),
    (
        "and-flattened",
        "errors.rate < 1 and (errors.rate > 0 and errors.champion_rate > 0)",
        "errors.rate < 1 and errors.rate > 0 and errors.champion_rate > 0",
    ),
    (
        "or-flattened",
        "(errors.rate < 1 or errors.rate > 2) or errors.champion_rate > 0",
        "errors.rate < 1 or errors.rate > 2 or errors.champion_rate > 0",
    ),
    (
        "or-inside-and-keeps-parens",
        "(errors.rate < 1 or errors.rate > 2) and errors.champion_rate > 0",
        "(errors.rate < 1 or errors.rate > 2) and errors.champion_rate > 0",
    ),
    (
        "and-inside-or-needs-no-parens",
        "errors.rate < 1 and errors.rate > 0 or errors.champion_rate > 0",
        "errors.rate < 1 and errors.rate > 0 or errors.champion_rate > 0",
    ),
    ("comment-and-whitespace", "  errors.rate < 1  # why\n", "errors.rate < 1"),
]


@pytest.mark.parametrize(("text", "normal"), [pytest.param(t, n, id=i) for i, t, n in ACCEPTED])
def test_accepted_expression_normal_form(text: str, normal: str) -> None:
    """An accepted expression renders to its negation-normal, fact-on-the-left canonical form."""
    assert to_source(_parse(text)) == normal


@pytest.mark.parametrize("text", [pytest.param(t, id=i) for i, t, _ in ACCEPTED])
def test_normal_form_is_a_fixed_point(text: str) -> None:
    """Re-parsing the canonical text gives the same canonical text."""
    normal = to_source(_parse(text))
    assert to_source(parse(normal, FACTS, {})) == normal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "accuracy.challenger < accuracy.champion * baseline_ratio",
            Compare("accuracy.challenger", "<", other="accuracy.champion", factor=0.95, thresholds=("baseline_ratio",)),
            id="fact-vs-fact",
        ),
        pytest.param(
            "cache.hit_rate < 1 - cache_miss_threshold",
            Compare("cache.hit_rate", "<", value=0.95, thresholds=("cache_miss_threshold",)),
            id="folded-threshold-recorded",
        ),
        pytest.param(
            "accuracy_threshold > accuracy.challenger and accuracy.challenger < accuracy_threshold",
            AllOf(
                (
                    Compare("accuracy.challenger", "<", value=0.85, thresholds=("accuracy_threshold",)),
                    Compare("accuracy.challenger", "<", value=0.85, thresholds=("accuracy_threshold",)),
                )
            ),
            id="mirrored-equals-direct",
        ),
        pytest.param(
            "not (errors.rate < 1 and (errors.champion_rate > 2 or errors.cache_rate == 0))",
            AnyOf(
                (
                    Compare("errors.rate", ">=", value=1.0),
                    AllOf(
                        (
                            Compare("errors.champion_rate", "<=", value=2.0),
                            Compare("errors.cache_rate", "!=", value=0.0),
                        )
                    ),
                )
            ),
            id="nnf-structure",
        ),
    ],
)
def test_parsed_structure(text: str, expected: Expr) -> None:
    """The parsed tree is the expected Compare/AllOf/AnyOf value, threshold names included."""
    assert _parse(text) == expected


# (id, text, allowed error codes)
REJECTED = [
    ("bare-call", "__import__('os')", {"expr-not-boolean"}),
    ("call-in-comparison", "__import__('os') < 1", {"expr-forbidden"}),
    ("attribute-of-call", "__import__('os').system < 1", {"expr-forbidden"}),
    ("method-call", "errors.rate.__abs__() < 1", {"expr-forbidden"}),
    ("dunder-attribute", "errors.rate.__class__ < 1", {"expr-unknown-fact"}),
    ("subscript", "errors.rate[0] < 1", {"expr-forbidden"}),
    ("lambda", "(lambda: 1) < errors.rate", {"expr-forbidden"}),
    ("string", "errors.rate < 'a'", {"expr-forbidden"}),
    ("boolean-literal", "errors.rate < True", {"expr-forbidden"}),
    ("none-literal", "errors.rate < None", {"expr-forbidden"}),
    ("complex-literal", "errors.rate < 1j", {"expr-forbidden"}),
    ("list", "errors.rate < [1]", {"expr-forbidden"}),
    ("power", "errors.rate ** 2 < 1", {"expr-forbidden"}),
    ("modulo", "errors.rate % 2 < 1", {"expr-forbidden"}),
    ("bitwise-invert", "~errors.rate < 1", {"expr-forbidden"}),
    ("unknown-fact", "errors.nope < 1", {"expr-unknown-fact"}),
    ("unknown-fact-deep", "errors.rate.x < 1", {"expr-unknown-fact"}),
    ("unknown-threshold", "errors.rate < nope", {"expr-unknown-threshold"}),
    ("boolean-threshold", "errors.rate < flag", {"expr-unknown-threshold"}),
    ("no-fact-numbers", "1 < 2", {"expr-no-fact"}),
    ("no-fact-threshold", "accuracy_threshold < 1", {"expr-no-fact"}),
    ("fact-times-fact", "errors.rate * errors.champion_rate < 1", {"expr-nonlinear"}),
    ("fact-times-fact-on-right", "errors.rate < errors.champion_rate * accuracy.champion", {"expr-nonlinear"}),
    ("division-by-fact", "1 / errors.rate < 2", {"expr-nonlinear"}),
    ("fact-plus-number", "errors.rate + 1 < 2", {"expr-nonlinear"}),
    ("number-minus-fact", "errors.rate < 1 - accuracy.challenger", {"expr-nonlinear"}),
    ("zero-coefficient", "0 * errors.rate < 1", {"expr-zero"}),
    ("zero-factor", "errors.rate < errors.champion_rate * 0", {"expr-zero"}),
    ("zero-threshold-factor", "errors.rate < errors.champion_rate * zero", {"expr-zero"}),
    ("division-by-zero", "errors.rate < 1 / 0", {"expr-zero"}),
    ("infinite-literal", "errors.rate < 1e400", {"expr-not-finite"}),
    ("in", "errors.rate in 1", {"expr-forbidden"}),
    ("not-in", "errors.rate not in 1", {"expr-forbidden"}),
    ("is", "errors.rate is 1", {"expr-forbidden"}),
    ("is-not", "errors.rate is not 1", {"expr-forbidden"}),
    ("empty", "", {"expr-syntax"}),
    ("blank", "   \n\t", {"expr-syntax"}),
    ("dangling-operator", "errors.rate <", {"expr-syntax"}),
    ("two-lines", "errors.rate < 1\nerrors.rate > 2", {"expr-syntax"}),
    ("statement", "import os", {"expr-syntax"}),
    ("null-byte", "errors.rate < 1\x00", {"expr-syntax"}),
    ("too-long", "errors.rate < 1" + " and errors.rate < 1" * 100, {"expr-too-long"}),
    ("deep-parens", "errors.rate < " + "(" * 300 + "1" + ")" * 300, {"expr-too-deep", "expr-syntax"}),
    ("deep-unary-minus", "errors.rate < " + "-" * 1000 + "1", {"expr-too-deep", "expr-syntax"}),
    ("bare-fact", "errors.rate", {"expr-not-boolean"}),
    ("bare-number", "1", {"expr-not-boolean"}),
    ("and-with-number", "errors.rate < 1 and 2", {"expr-not-boolean"}),
    ("not-of-fact", "not errors.rate", {"expr-not-boolean"}),
    ("conditional-expression", "errors.rate < 1 if errors.rate else errors.rate > 2", {"expr-not-boolean"}),
    ("tuple", "errors.rate < 1,", {"expr-not-boolean"}),
]


@pytest.mark.parametrize(("text", "codes"), [pytest.param(t, c, id=i) for i, t, c in REJECTED])
def test_rejected_expression_code(text: str, codes: set[str]) -> None:
    """A rejected expression raises ExprError with a stable code and a non-empty message."""
    with pytest.raises(ExprError) as caught:
        _parse(text)
    assert caught.value.code in codes
    assert caught.value.message


def test_non_string_is_rejected() -> None:
    """A value that is not a string is refused as an empty expression, not with a TypeError."""
    with pytest.raises(ExprError) as caught:
        parse(None, FACTS, THRESHOLDS)  # type: ignore[arg-type]
    assert caught.value.code == "expr-syntax"


def test_huge_integer_literal_is_rejected_with_code() -> None:
    """An integer literal beyond float range is refused with ExprError (expr-not-finite), not OverflowError."""
    with pytest.raises(ExprError) as caught:
        _parse("errors.rate < " + "9" * 400)
    assert caught.value.code == "expr-not-finite"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1e-300 * errors.rate < 1e300", id="value-overflows-to-inf"),
        pytest.param("1e-300 * errors.rate < errors.champion_rate * 1e300", id="factor-overflows-to-inf"),
        pytest.param("1e300 * errors.rate < errors.champion_rate * 1e-300", id="factor-underflows-to-zero"),
    ],
)
def test_normalised_numbers_stay_finite_and_nonzero(text: str) -> None:
    """Dividing out the left coefficient never yields an infinite value or a zero factor."""
    with pytest.raises(ExprError) as caught:
        _parse(text)
    assert caught.value.code in {"expr-not-finite", "expr-zero"}


# (id, text, facts, expected)
EVALUATIONS = [
    ("lt-true", "errors.rate < 0.1", {"errors.rate": 0.05}, True),
    ("lt-false-at-boundary", "errors.rate < 0.1", {"errors.rate": 0.1}, False),
    ("le-true-at-boundary", "errors.rate <= 0.1", {"errors.rate": 0.1}, True),
    ("eq", "errors.rate == 0.1", {"errors.rate": 0.1}, True),
    ("ne", "errors.rate != 0.1", {"errors.rate": 0.1}, False),
    ("missing-fact-lt", "errors.rate < 0.1", {}, False),
    ("missing-fact-ge", "errors.rate >= 0.1", {}, False),
    ("missing-fact-ne", "errors.rate != 0.1", {}, False),
    ("missing-fact-negated-is-still-false", "not (errors.rate < 0.1)", {}, False),
    ("missing-fact-is-none", "errors.rate < 0.1", {"errors.rate": None}, False),
    ("missing-other-fact", "accuracy.challenger < accuracy.champion", {"accuracy.challenger": 0.5}, False),
    ("missing-left-fact", "accuracy.challenger < accuracy.champion", {"accuracy.champion": 0.5}, False),
    (
        "fact-times-factor",
        "accuracy.challenger < accuracy.champion * 0.95",
        {"accuracy.challenger": 0.9, "accuracy.champion": 0.96},
        True,
    ),
    (
        "negative-factor",
        "-accuracy.challenger < accuracy.champion * 2",
        {"accuracy.challenger": -1.0, "accuracy.champion": 0.4},
        False,
    ),
    (
        "and-both-true",
        "errors.rate > 0 and errors.champion_rate > 0",
        {"errors.rate": 1, "errors.champion_rate": 1},
        True,
    ),
    (
        "and-one-false",
        "errors.rate > 0 and errors.champion_rate > 0",
        {"errors.rate": 1, "errors.champion_rate": -1},
        False,
    ),
    ("and-one-missing", "errors.rate > 0 and errors.champion_rate > 0", {"errors.rate": 1}, False),
    (
        "or-one-true",
        "errors.rate > 0 or errors.champion_rate > 0",
        {"errors.rate": -1, "errors.champion_rate": 1},
        True,
    ),
    (
        "or-both-false",
        "errors.rate > 0 or errors.champion_rate > 0",
        {"errors.rate": -1, "errors.champion_rate": -1},
        False,
    ),
    ("or-one-missing", "errors.rate > 0 or errors.champion_rate > 0", {"errors.champion_rate": 1}, True),
    ("chained-inside", "0.1 < errors.rate < 0.5", {"errors.rate": 0.3}, True),
    ("chained-outside", "0.1 < errors.rate < 0.5", {"errors.rate": 0.7}, False),
    ("not-chained-outside", "not (0.1 < errors.rate < 0.5)", {"errors.rate": 0.7}, True),
    (
        "nested",
        "(errors.rate > 0.5 or errors.champion_rate > 0.5) and not (errors.cache_rate >= 0.1)",
        {"errors.rate": 0.6, "errors.champion_rate": 0.1, "errors.cache_rate": 0.05},
        True,
    ),
]


@pytest.mark.parametrize(("text", "facts", "expected"), [pytest.param(t, f, e, id=i) for i, t, f, e in EVALUATIONS])
def test_evaluate(text: str, facts: dict[str, float], expected: bool) -> None:
    """evaluate() follows and/or semantics and treats a comparison on a missing fact as false."""
    assert evaluate(_parse(text), facts) is expected


# (id, text, branches, terms)
DNF = [
    ("single", "errors.rate < 1", 1, 1),
    ("and-of-two", "errors.rate < 1 and errors.champion_rate < 1", 1, 2),
    ("or-of-two", "errors.rate < 1 or errors.champion_rate < 1", 2, 2),
    ("or-of-three", "errors.rate < 1 or errors.champion_rate < 1 or errors.cache_rate < 1", 3, 3),
    ("chained", "0 < errors.rate < 1", 1, 2),
    ("chained-negated", "not (0 < errors.rate < 1)", 2, 2),
    ("or-and-leaf", "(errors.rate < 1 or errors.champion_rate < 1) and errors.cache_rate < 1", 2, 4),
    (
        "or-and-or",
        "(errors.rate < 1 or errors.champion_rate < 1) and (errors.cache_rate < 1 or errors.timeout_rate < 1)",
        4,
        8,
    ),
    (
        "or-of-and-and-leaf",
        "(errors.rate < 1 and errors.champion_rate < 1) or errors.cache_rate < 1",
        2,
        3,
    ),
    (
        "three-ors-anded",
        "(errors.rate < 1 or errors.rate > 2) and (errors.champion_rate < 1 or errors.champion_rate > 2)"
        " and (errors.cache_rate < 1 or errors.cache_rate > 2 or errors.cache_rate == 1.5)",
        12,
        36,
    ),
]


@pytest.mark.parametrize(("text", "branches", "terms"), [pytest.param(t, b, n, id=i) for i, t, b, n in DNF])
def test_dnf_sizes(text: str, branches: int, terms: int) -> None:
    """dnf_branches counts DNF conjunctions and dnf_terms the comparisons across them."""
    expr = _parse(text)
    assert dnf_branches(expr) == branches
    assert dnf_terms(expr) == terms


def test_facts_of_and_comparisons() -> None:
    """facts_of lists each fact once in order of appearance; comparisons lists every leaf."""
    expr = _parse("accuracy.challenger < accuracy.champion * 0.9 or (errors.rate > 0.1 and accuracy.challenger < 0.5)")
    assert facts_of(expr) == ["accuracy.challenger", "accuracy.champion", "errors.rate"]
    assert [leaf.fact for leaf in comparisons(expr)] == ["accuracy.challenger", "errors.rate", "accuracy.challenger"]


FACT_TOKENS = ["accuracy.challenger", "accuracy.champion", "errors.rate", "latency.p95_ms", "errors.nope", "x.y"]
GRAMMAR_TOKENS = [
    *FACT_TOKENS,
    *THRESHOLDS,
    "nope",
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "!=",
    "in",
    "is",
    "not",
    "and",
    "or",
    "if",
    "else",
    "lambda",
    ":",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "*",
    "/",
    "+",
    "-",
    "**",
    "~",
    "0",
    "1",
    "2",
    "0.5",
    "1e-12",
    "1e9",
    "1e400",
    "'s'",
    "True",
    "None",
    "__import__",
    "#",
    "\n",
]


@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_parse_arbitrary_text_raises_only_expr_error(text: str) -> None:
    """For any text, parse returns an Expr or raises ExprError, never another exception."""
    try:
        result = _parse(text)
    except ExprError as error:
        assert error.code.startswith("expr-")
    else:
        assert isinstance(result, Compare | AllOf | AnyOf)


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # ast.parse warns on e.g. `1and`; not under test here
@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(st.sampled_from(GRAMMAR_TOKENS), min_size=1, max_size=25),
    st.sampled_from([" ", ""]),
)
def test_parse_grammar_like_text_raises_only_expr_error(tokens: list[str], separator: str) -> None:
    """For token soup over the expression alphabet, parse returns an Expr or raises ExprError only."""
    text = separator.join(tokens)
    try:
        result = _parse(text)
    except ExprError as error:
        assert error.code.startswith("expr-")
    else:
        assert isinstance(result, Compare | AllOf | AnyOf)
        assert to_source(result)
