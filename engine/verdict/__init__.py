"""From facts to a decision, pure: conditions -> score -> level -> rule -> traffic -> status -> reason."""

from __future__ import annotations

from .conditions import condition_results
from .decide import decide
from .rules import choose_rule, rule_predicates
from .score import risk_level, risk_score
from .status import TestHistory, status_word

__all__ = [
    "TestHistory",
    "choose_rule",
    "condition_results",
    "decide",
    "risk_level",
    "risk_score",
    "rule_predicates",
    "status_word",
]
