"""Policy as code: documents, schema, validation, effective policy, digest, diff and compiler."""

from .catalog import ACTIONS, CONDITIONS, DECISION_ACTIONS, FACTS
from .compiler import compile_policy
from .diagnostics import Diagnostic
from .model import Condition, DecisionRule, Indicator, Policy
from .policyset import DEFAULT_PROFILE, PolicyError, PolicySet, effective, load_effective, load_set, validate_set

__all__ = [
    "ACTIONS",
    "CONDITIONS",
    "DECISION_ACTIONS",
    "DEFAULT_PROFILE",
    "FACTS",
    "Condition",
    "DecisionRule",
    "Diagnostic",
    "Indicator",
    "Policy",
    "PolicyError",
    "PolicySet",
    "compile_policy",
    "effective",
    "load_effective",
    "load_set",
    "validate_set",
]
