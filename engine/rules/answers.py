"""The ruleset's answers, remembered by the outcome of every comparison the policy makes.

What fires depends on the facts only through each leaf comparison of each indicator's `when`:
whether its facts are present and, when they are, whether it holds. So the answer for one
outcome vector is the answer for every fact set with that vector, and durable_rules is asked
once per vector. Real streams produce few of them (14 over 38,400 snapshots of the bundled
scenarios); every other fact set still goes to durable_rules. The leaves are evaluated as
`expr.evaluate` evaluates them, which tests/test_differential.py holds equal to durable_rules,
and the same file checks that answers from here equal durable_rules' own on random facts.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Mapping, Sequence

from ..policy.expr import Compare
from .durable_adapter import CompiledRuleset

MAX_ANSWERS = 65_536  # distinct outcome vectors remembered; past it, answers are asked every time
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
# a leaf's outcome: its fact missing, its other fact missing, false, true
MISSING, OTHER_MISSING, FALSE, TRUE = 0, 1, 2, 3

Leaf = tuple[str, Callable[[float, float], bool], float, str | None, float]  # fact, compare, value, other, factor


class Answers:
    """`fire(facts)`: the rules that fire, from memory when this outcome vector was seen before."""

    def __init__(
        self, ruleset: CompiledRuleset, leaves: Sequence[Compare], asked: frozenset[str], capacity: int = MAX_ANSWERS
    ) -> None:
        """`capacity`: outcome vectors remembered at most (0: durable_rules is asked every time)."""
        self.ruleset = ruleset
        self.capacity = capacity
        self.asked = asked  # the facts the rules name: only those are sent to durable_rules
        self._leaves: tuple[Leaf, ...] = tuple(
            dict.fromkeys(
                (leaf.fact, _OPS[leaf.op], 0.0 if leaf.value is None else leaf.value, leaf.other, leaf.factor)
                for leaf in leaves
            )
        )  # each distinct comparison once: two indicators asking the same thing share its outcome
        self._known: dict[tuple[int, ...], tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.asked_durable = 0  # misses, for the benchmark and the tests

    def fire(self, facts: Mapping[str, float]) -> tuple[str, ...]:
        key = self.outcomes(facts)
        answer = self._known.get(key)
        if answer is None:
            answer = tuple(self.ruleset.fire({name: facts[name] for name in self.asked if name in facts}))
            with self._lock:
                self.asked_durable += 1
                if len(self._known) < self.capacity:
                    self._known[key] = answer
        return answer

    def outcomes(self, facts: Mapping[str, float]) -> tuple[int, ...]:
        """Each distinct leaf's outcome on these facts, in the policy's order."""
        out = []
        get = facts.get
        for fact, compare, value, other, factor in self._leaves:
            left = get(fact)
            if left is None:
                out.append(MISSING)
                continue
            right = value
            if other is not None:
                found = get(other)
                if found is None:
                    out.append(OTHER_MISSING)
                    continue
                right = found * factor
            out.append(TRUE if compare(left, right) else FALSE)
        return tuple(out)

    def __len__(self) -> int:
        return len(self._known)
