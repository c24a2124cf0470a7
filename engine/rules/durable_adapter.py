"""The only module that imports durable_rules: register a compiled ruleset, assert facts, collect firings.

What durable_rules 2.0.28 does, measured, and what this module does about it:
- `Host()` starts two background timer threads; we never use timers, so `_run` is a no-op.
- Nothing in it is thread safe: one lock per host, held for a whole evaluation.
- A ruleset keeps at most 1,024 live session ids: every evaluation uses one fixed sid and
  deletes its state afterwards. Deleting the state of a message that matched no rule
  crashes, so every compiled ruleset ends with a catch-all rule.
- `post` fires only the highest-priority match; `assert_fact` fires every match (once per
  branch of an `or`), so facts are asserted.
- `set_rulesets` mutates its argument: it is given a deep copy.
- Its JSON parser rejects numbers in exponent form (`1e-06`, error 204), which Python's
  json writes for small and large floats: every number is written in positional form.
- A condition on the field `sid` hangs it; the catch-all tests a marker field instead.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
from durable import engine as _durable

SID = "0"


class RulesetError(RuntimeError):
    """durable_rules refused a ruleset or a message."""


def _number(value: float) -> str:
    text = repr(value)
    if "e" in text or "E" in text:
        # keep a decimal point: bare digits past 2**63 are read as a saturated int64
        return str(np.format_float_positional(value, unique=True, trim="0"))
    return text


def dumps(value: Any, **_: Any) -> str:
    """JSON with every number in positional notation, the only form durable_rules parses."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RulesetError(f"durable_rules cannot take the non-finite number {value}")
        return _number(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    if hasattr(value, "_d"):  # durable's own Content wrapper around a dict
        return dumps(value._d)
    raise TypeError(f"cannot encode {type(value).__name__} for durable_rules")


# durable.engine calls json.dumps/json.loads through its module global `json`.
_durable.json = types.SimpleNamespace(dumps=dumps, loads=json.loads)


class _Host(_durable.Host):  # type: ignore[misc]  # durable_rules ships no type hints
    """A Host without background threads whose named actions record the rule that fired."""

    def __init__(self) -> None:
        self.fired: list[str] = []
        super().__init__()

    def _run(self) -> None:
        return None

    def get_action(self, action_name: str) -> Any:
        def record(_closure: Any) -> None:
            self.fired.append(action_name)

        return record


class CompiledRuleset:
    """One registered ruleset; `fire(facts)` returns the distinct actions that fired, in firing order."""

    def __init__(self, name: str, rules: Mapping[str, Any], catch_all: str, marker: str) -> None:
        self.name = name
        self._catch_all = catch_all
        self._marker = marker
        self._lock = threading.Lock()
        self._host = _Host()
        try:
            self._host.set_rulesets({name: copy.deepcopy(dict(rules))})
        except Exception as error:  # durable raises bare Exception and its own error type
            raise RulesetError(f"durable_rules refused ruleset {name!r}: {error}") from error

    def fire(self, facts: Mapping[str, float]) -> list[str]:
        message: dict[str, Any] = dict(facts)
        message["sid"] = SID
        message[self._marker] = 1
        with self._lock:
            self._host.fired.clear()
            try:
                self._host.assert_fact(self.name, message)
            except Exception as error:
                raise RulesetError(f"durable_rules refused the facts: {error}") from error
            finally:
                if self._host.fired:  # deleting the state of an unmatched message crashes
                    self._host.delete_state(self.name, SID)
            fired = list(dict.fromkeys(self._host.fired))
        if self._catch_all not in fired:
            raise RulesetError("the catch-all rule did not fire: the ruleset is not one abguard compiled")
        fired.remove(self._catch_all)
        return fired
