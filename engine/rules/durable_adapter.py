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
import decimal
import json
import math
import numbers
import re
import threading
import types
from collections.abc import Mapping
from typing import Any

import durable_rules_engine as _engine
import orjson
from durable import engine as _durable

SID = "0"
_HANDLED = 0  # assert_fact's result code when some rule matched


class RulesetError(RuntimeError):
    """durable_rules refused a ruleset or a message."""


def _number(value: float) -> str:
    text = float.__repr__(float(value))  # numpy floats repr as 'np.float64(...)'
    if "e" in text or "E" in text:
        # keep a decimal point: bare digits past 2**63 are read as a saturated int64
        digits = format(decimal.Decimal(text), "f")  # the same shortest digits, written out positionally
        return digits if "." in digits else digits + ".0"
    return text


_EXPONENT = re.compile(r"\d[eE][-+]?\d")


def dumps(value: Any, **_: Any) -> str:
    """JSON with every number in positional notation, the only form durable_rules parses.

    The C encoder writes most messages with no exponent at all; only when one shows up
    (or something it cannot encode) is the message written again number by number.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return _exact(value)
    return _exact(value) if _EXPONENT.search(text) else text


_EXPONENT_VALUE = re.compile(r":(-?[0-9.]+e[-+][0-9]+)")


def encode_facts(message: Mapping[str, Any]) -> str:
    """`dumps` for a flat message of fact names and numbers: exponents rewritten in place.

    Safe because fact names hold no ':' (the catalog's names are dotted identifiers), so
    every ':' in the text separates a key from its value.
    """
    text = orjson.dumps(message).decode()
    if "e-" not in text and "e+" not in text:  # how exponents are written; no fact name has one
        return text
    return _EXPONENT_VALUE.sub(lambda m: ":" + _number(float(m.group(1))), text)


def _exact(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise RulesetError(f"durable_rules cannot take the non-finite number {value}")
        return _number(float(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_exact(item) for item in value) + "]"
    if hasattr(value, "_d"):  # durable's own Content wrapper around a dict
        return _exact(value._d)
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
    """One registered ruleset; `fire(facts)` returns the distinct rules that fired, in firing order.

    The ruleset is registered through a Host; evaluation then drives the ruleset's engine
    handle directly (assert, then take each queued action and complete it), which is what
    Host.assert_fact does minus a Python closure, a state write-back and a JSON parse per
    fired rule: measured, that was most of the cost of an evaluation.
    """

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
        self._handle = self._host.get_ruleset(name)._handle

    def fire(self, facts: Mapping[str, float]) -> list[str]:
        message: dict[str, Any] = dict(facts)
        message["sid"] = SID
        message[self._marker] = 1
        text = encode_facts(message)
        fired: list[str] = []
        with self._lock:
            try:
                result = _engine.assert_fact(self._handle, text)
                if result[0] == _HANDLED:
                    state = result[1]
                    action = _engine.start_action_for_state(self._handle, state)
                    queued = action[1] if action else None
                    while queued:
                        fired.append(queued[2 : queued.index('"', 2)])  # '{"rule.id": {...}}'
                        queued = _engine.complete_and_start_action(self._handle, state)
            except _engine.error as error:
                raise RulesetError(f"durable_rules refused the facts: {error}") from error
            finally:
                if fired:  # deleting the state of an unmatched message crashes
                    _engine.delete_state(self._handle, SID)
        distinct = list(dict.fromkeys(fired))
        if self._catch_all not in distinct:
            raise RulesetError("the catch-all rule did not fire: the ruleset is not one abguard compiled")
        distinct.remove(self._catch_all)
        return distinct
