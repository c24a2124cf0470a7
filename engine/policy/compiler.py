"""Effective policy -> durable_rules ruleset: one rule per indicator, then a catch-all."""

from __future__ import annotations

from typing import Any

from .expr import AllOf, AnyOf, Compare, Expr
from .model import Policy

CATCH_ALL = "abguard.catch_all"
MARKER = "abguard_eval"  # every asserted message carries it; the catch-all tests it
CRITICAL_PRIORITY = 1
INDICATOR_PRIORITY = 2
CATCH_ALL_PRIORITY = 3
# durable_rules 2.0.28 keeps one rule's `$and`/`$or` groups in a fixed sequence of 32 slots, two
# per group, and refuses the ruleset (error 113) past that: 15 groups fit (measured, every shape).
MAX_GROUPS = 15

_OPERATORS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "==": "$eq", "!=": "$neq"}


def compile_policy(policy: Policy) -> dict[str, dict[str, Any]]:
    """The ruleset JSON durable_rules registers; each rule's action is its indicator id."""
    rules: dict[str, Any] = {}
    for indicator in policy.indicators:
        rules[indicator.id] = {
            "all": [{"m": condition(indicator.expr)}],
            "pri": CRITICAL_PRIORITY if indicator.critical else INDICATOR_PRIORITY,
            "run": indicator.id,
        }
    rules[CATCH_ALL] = {"all": [{"m": {"$ex": {MARKER: 1}}}], "pri": CATCH_ALL_PRIORITY, "run": CATCH_ALL}
    return {policy.ruleset_name: rules}


def condition(expr: Expr) -> dict[str, Any]:
    if isinstance(expr, AllOf):
        # a fact-vs-fact comparison's tests join this `$and` rather than nesting a group of their own
        return {"$and": [test for item in expr.items for test in _conjuncts(item)]}
    if isinstance(expr, AnyOf):
        return {"$or": [condition(item) for item in expr.items]}
    tests = _comparison(expr)
    return tests[0] if len(tests) == 1 else {"$and": tests}


def groups(expr: Expr) -> int:
    """How many `$and`/`$or` groups condition(expr) has: durable_rules takes at most MAX_GROUPS."""
    return _groups(condition(expr))


def _groups(test: dict[str, Any]) -> int:
    items = test.get("$and", test.get("$or"))
    return 0 if not isinstance(items, list) else 1 + sum(_groups(item) for item in items)


def _conjuncts(expr: Expr) -> list[dict[str, Any]]:
    return _comparison(expr) if isinstance(expr, Compare) else [condition(expr)]


def _comparison(expr: Compare) -> list[dict[str, Any]]:
    """The tests that together mean this comparison."""
    if expr.other is None:
        return [{_OPERATORS[expr.op]: {expr.fact: expr.value}}]
    if expr.factor == 1.0:
        right: Any = {"$m": expr.other}
    else:
        right = {"$mul": {"$l": {"$m": expr.other}, "$r": expr.factor}}
    # durable_rules lets `a < b` hold when b is missing once an earlier test in the rule
    # held (measured); a comparison naming a missing fact must be false, so say b exists.
    return [{"$ex": {expr.other: 1}}, {_OPERATORS[expr.op]: {expr.fact: right}}]
