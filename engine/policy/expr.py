"""`when` expressions: parsed through a whitelist over Python's ast, never evaluated with eval.

Grammar (by example):
    accuracy.challenger < accuracy_threshold
    accuracy.challenger < accuracy.champion * 0.95 and accuracy.p_value < 0.05
    cache.hit_rate < 1 - cache_miss_threshold
    not (latency.p95_ms <= 2 * latency_p95_threshold_ms) or errors.rate >= 0.1

A dotted name is a fact from the catalog; a bare name is one of the condition's
thresholds. Each comparison needs at least one fact; each side is a product of
at most one fact with numbers and thresholds (which may be added and subtracted). The result is in negation normal
form: comparisons joined by all/any, `not` pushed into the operators.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_EXPRESSION_LENGTH = 2000

_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_AST_OPS: dict[type[ast.cmpop], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}


class ExprError(ValueError):
    """A `when` expression that cannot be accepted; `code` is stable, `message` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Compare:
    """`fact OP value` or `fact OP other * factor`; thresholds already substituted."""

    fact: str
    op: str
    value: float | None = None
    other: str | None = None
    factor: float = 1.0
    thresholds: tuple[str, ...] = ()  # threshold names folded into value or factor


@dataclass(frozen=True)
class AllOf:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Expr, ...]


Expr = Compare | AllOf | AnyOf


@dataclass(frozen=True)
class _Term:
    """A side of a comparison: coefficient * fact (fact may be None for a constant)."""

    coefficient: float
    fact: str | None
    thresholds: tuple[str, ...]


def parse(text: str, facts: Mapping[str, object], thresholds: Mapping[str, float]) -> Expr:
    """Parse and check an expression; raise ExprError with a stable code on anything else."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("expr-syntax", "expression is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExprError("expr-too-long", f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "invalid decimal literal" in `1and`
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExprError("expr-syntax", f"syntax error at column {error.offset or 0}: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise ExprError("expr-syntax", f"cannot parse: {type(error).__name__}") from None
    try:
        return _Converter(facts, thresholds).boolean(tree.body, negate=False)
    except RecursionError:
        raise ExprError("expr-too-deep", "expression nests too deeply") from None


class _Converter:
    def __init__(self, facts: Mapping[str, object], thresholds: Mapping[str, float]) -> None:
        self.facts = facts
        self.thresholds = thresholds

    def boolean(self, node: ast.expr, negate: bool) -> Expr:
        if isinstance(node, ast.BoolOp):
            items = tuple(self.boolean(value, negate) for value in node.values)
            conjunction = isinstance(node.op, ast.And) != negate
            return _flatten(AllOf(items) if conjunction else AnyOf(items))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self.boolean(node.operand, not negate)
        if isinstance(node, ast.Compare):
            return self.compare(node, negate)
        raise ExprError("expr-not-boolean", f"expected a comparison, found {_describe(node)}")

    def compare(self, node: ast.Compare, negate: bool) -> Expr:
        sides = [node.left, *node.comparators]
        parts: list[Expr] = []
        for left, op_node, right in zip(sides, node.ops, sides[1:], strict=False):
            op = _AST_OPS.get(type(op_node))
            if op is None:
                raise ExprError("expr-forbidden", f"operator {type(op_node).__name__} is not allowed")
            parts.append(self.comparison(self.term(left), op, self.term(right), negate))
        if len(parts) == 1:
            return parts[0]
        # a < b < c means a < b and b < c; negated, one of them fails.
        return _flatten(AnyOf(tuple(parts)) if negate else AllOf(tuple(parts)))

    def comparison(self, left: _Term, op: str, right: _Term, negate: bool) -> Compare:
        if negate:
            op = _NEGATED[op]
        if left.fact is None and right.fact is None:
            raise ExprError("expr-no-fact", "a comparison needs at least one fact")
        if left.fact is None:
            left, right, op = right, left, _MIRRORED[op]
        assert left.fact is not None
        if left.coefficient == 0:
            raise ExprError("expr-zero", f"{left.fact} is multiplied by zero")
        if left.coefficient < 0:
            op = _MIRRORED[op]
        names = tuple(dict.fromkeys(left.thresholds + right.thresholds))
        if right.coefficient == 0 and right.fact is not None:
            raise ExprError("expr-zero", f"{right.fact} is multiplied by zero")
        quotient = right.coefficient / left.coefficient
        if not math.isfinite(quotient) or (quotient == 0 and right.coefficient != 0):
            raise ExprError("expr-not-finite", "the numbers of this comparison over- or underflow when normalised")
        if right.fact is None:
            return Compare(left.fact, op, value=quotient, thresholds=names)
        return Compare(left.fact, op, other=right.fact, factor=quotient, thresholds=names)

    def term(self, node: ast.expr) -> _Term:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Div):
            left, right = self.term(node.left), self.term(node.right)
            if left.fact is not None and right.fact is not None:
                raise ExprError("expr-nonlinear", f"{left.fact} and {right.fact} are multiplied together")
            names = left.thresholds + right.thresholds
            if isinstance(node.op, ast.Mult):
                return _checked(_Term(left.coefficient * right.coefficient, left.fact or right.fact, names))
            if right.fact is not None:
                raise ExprError("expr-nonlinear", f"division by the fact {right.fact}")
            if right.coefficient == 0:
                raise ExprError("expr-zero", "division by zero")
            return _checked(_Term(left.coefficient / right.coefficient, left.fact, names))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            left, right = self.term(node.left), self.term(node.right)
            if left.fact is not None or right.fact is not None:
                raise ExprError("expr-nonlinear", "+ and - may join numbers and thresholds, not facts")
            sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
            return _checked(
                _Term(left.coefficient + sign * right.coefficient, None, left.thresholds + right.thresholds)
            )
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = self.term(node.operand)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            return _Term(sign * inner.coefficient, inner.fact, inner.thresholds)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExprError("expr-forbidden", f"only numbers may appear as literals, found {node.value!r}")
            try:
                return _checked(_Term(float(node.value), None, ()))
            except OverflowError:
                raise ExprError("expr-not-finite", "a number in the expression is too large") from None
        if isinstance(node, ast.Name | ast.Attribute):
            return self.name(node)
        raise ExprError("expr-forbidden", f"{_describe(node)} is not allowed in an expression")

    def name(self, node: ast.Name | ast.Attribute) -> _Term:
        path = _dotted(node)
        if "." in path:
            if path not in self.facts:
                raise ExprError("expr-unknown-fact", f"unknown fact '{path}' (see `abguard policy facts`)")
            return _Term(1.0, path, ())
        if path not in self.thresholds:
            raise ExprError("expr-unknown-threshold", f"unknown threshold '{path}': not in this condition's thresholds")
        value = self.thresholds[path]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExprError("expr-unknown-threshold", f"threshold '{path}' is not a number")
        return _checked(_Term(float(value), None, (path,)))


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise ExprError("expr-forbidden", f"{_describe(node)} is not allowed in a fact name")


def _checked(term: _Term) -> _Term:
    if not math.isfinite(term.coefficient):
        raise ExprError("expr-not-finite", "a number in the expression is not finite")
    return term


def _flatten(expr: AllOf | AnyOf) -> Expr:
    kind = type(expr)
    items: list[Expr] = []
    for item in expr.items:
        items.extend(item.items if isinstance(item, kind) else (item,))
    return kind(tuple(items))


def _describe(node: ast.AST) -> str:
    names = {
        ast.Call: "a function call",
        ast.Subscript: "a subscript",
        ast.Lambda: "a lambda",
        ast.Attribute: "an attribute",
        ast.BinOp: "this arithmetic operator",
        ast.Constant: "a bare value",
        ast.Name: "a bare name",
    }
    return names.get(type(node), f"'{type(node).__name__}'")


def evaluate(expr: Expr, facts: Mapping[str, float]) -> bool:
    """Reference semantics: a comparison naming a missing fact is false (as in durable_rules)."""
    if isinstance(expr, AllOf):
        return all(evaluate(item, facts) for item in expr.items)
    if isinstance(expr, AnyOf):
        return any(evaluate(item, facts) for item in expr.items)
    left = facts.get(expr.fact)
    if left is None:
        return False
    if expr.other is None:
        assert expr.value is not None
        right = expr.value
    else:
        other = facts.get(expr.other)
        if other is None:
            return False
        right = other * expr.factor
    return _COMPARE[expr.op](left, right)


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def facts_of(expr: Expr) -> list[str]:
    """The fact names an expression reads, in order of appearance."""
    if isinstance(expr, Compare):
        return [expr.fact] + ([expr.other] if expr.other else [])
    return list(dict.fromkeys(name for item in expr.items for name in facts_of(item)))


def comparisons(expr: Expr) -> list[Compare]:
    if isinstance(expr, Compare):
        return [expr]
    return [leaf for item in expr.items for leaf in comparisons(item)]


def dnf_branches(expr: Expr) -> int:
    """How many times durable_rules fires this rule when every comparison holds."""
    if isinstance(expr, Compare):
        return 1
    if isinstance(expr, AnyOf):
        return sum(dnf_branches(item) for item in expr.items)
    return math.prod(dnf_branches(item) for item in expr.items)


def dnf_terms(expr: Expr) -> int:
    """Conditions durable_rules builds for this rule after expanding it to disjunctive form."""
    if isinstance(expr, Compare):
        return 1 if expr.other is None else 2  # fact-vs-fact also tests that the other fact exists
    if isinstance(expr, AnyOf):
        return sum(dnf_terms(item) for item in expr.items)
    branches = [dnf_branches(item) for item in expr.items]
    total = 0
    for index, item in enumerate(expr.items):
        others = math.prod(branches[:index] + branches[index + 1 :])
        total += dnf_terms(item) * others
    return total


def to_source(expr: Expr) -> str:
    """Canonical text of the normalised expression, used for digests and display."""
    if isinstance(expr, AllOf | AnyOf):
        joiner = " and " if isinstance(expr, AllOf) else " or "
        return joiner.join(_wrapped(item, expr) for item in expr.items)
    right = _number(expr.value) if expr.other is None else f"{expr.other} * {_number(expr.factor)}"
    return f"{expr.fact} {expr.op} {right}"


def _wrapped(item: Expr, parent: AllOf | AnyOf) -> str:
    text = to_source(item)
    return f"({text})" if isinstance(item, AnyOf) and isinstance(parent, AllOf) else text


def _number(value: float | None) -> str:
    assert value is not None
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)
