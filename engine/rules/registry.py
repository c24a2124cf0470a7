"""Compile an effective policy and register it with durable_rules: the bridge the CLI and engine use."""

from __future__ import annotations

from typing import Any

from ..policy.compiler import CATCH_ALL, MARKER, compile_policy
from ..policy.model import Policy
from .durable_adapter import CompiledRuleset


def register(policy: Policy, ruleset: dict[str, Any] | None = None) -> CompiledRuleset:
    """A durable_rules ruleset for the policy; raises RulesetError if durable_rules refuses it."""
    ruleset = ruleset if ruleset is not None else compile_policy(policy)
    ((name, rules),) = ruleset.items()
    return CompiledRuleset(name, rules, CATCH_ALL, MARKER)
