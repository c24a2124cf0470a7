"""Field-by-field diff of two policy documents, judging whether each threshold change is stricter or looser.

Stricter means the rule fires more easily. For a threshold used as `fact < t`, raising t
is stricter; as `fact > t`, lowering it is. Literals inside `when` are judged the same way
when the expression keeps its shape; severities up, `for` shorter, `critical` switched on
and decision `min_score`/`held_for` lowered are stricter too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .catalog import FACTS
from .diagnostics import Path, format_path
from .durations import parse_duration
from .expr import Compare, ExprError, comparisons, parse
from .sequential import sequential_used

_MISSING = object()
_NAMED = ("indicators", "rules", "levels")


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any
    effect: str = ""  # stricter, looser, mixed or empty when not a threshold

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new, "effect": self.effect or None}


def diff(old: Any, new: Any) -> list[Change]:
    changes: list[Change] = []
    _walk(old, new, (), changes)
    return [_judged(change, old, new) for change in changes]


def _walk(old: Any, new: Any, path: Path, out: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            _walk(old.get(key, _MISSING), new.get(key, _MISSING), (*path, key), out)
    elif path and path[-1] in _NAMED and _named(old) and _named(new):
        old_items = {item["name"]: item for item in old}
        new_items = {item["name"]: item for item in new}
        for name in list(old_items) + [n for n in new_items if n not in old_items]:
            _walk(old_items.get(name, _MISSING), new_items.get(name, _MISSING), (*path, name), out)
        if [i["name"] for i in old if i["name"] in new_items] != [i["name"] for i in new if i["name"] in old_items]:
            out.append(Change(format_path((*path, "order")), [i["name"] for i in old], [i["name"] for i in new]))
    elif old != new:
        out.append(Change(format_path(path), _plain(old), _plain(new)))


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _plain(value: Any) -> Any:
    return None if value is _MISSING else value


def _judged(change: Change, old_doc: Any, new_doc: Any) -> Change:
    parts = change.path.split(".")
    effect = ""
    try:
        if len(parts) >= 5 and parts[:2] == ["spec", "conditions"] and parts[3] == "thresholds":
            effect = _threshold_effect(old_doc, new_doc, parts[2], parts[4])
        elif len(parts) >= 6 and parts[:2] == ["spec", "conditions"] and parts[3] == "indicators":
            effect = _indicator_effect(parts[5], change.old, change.new, old_doc, new_doc, parts[2])
        elif parts[:3] == ["spec", "decision", "rules"] and len(parts) == 6 and parts[4] == "if":
            effect = _rule_effect(parts[5], change.old, change.new)
        elif parts == ["spec", "statistics", "false_alarms_per_test_day"]:
            effect = "stricter" if change.new > change.old else "looser" if change.new < change.old else ""
    except (ExprError, ValueError, KeyError, TypeError):
        effect = ""
    return Change(change.path, change.old, change.new, effect)


def _direction(ops: list[str], raised: bool) -> str:
    """Effect of raising (or lowering) the right-hand side of comparisons with these operators."""
    effects = {("stricter" if (op in ("<", "<=")) == raised else "looser") for op in ops if op not in ("==", "!=")}
    return effects.pop() if len(effects) == 1 else ("mixed" if effects else "")


def _threshold_effect(old_doc: Any, new_doc: Any, condition: str, name: str) -> str:
    """Each comparison using the threshold is evaluated with the old and the new value; the
    effect follows from which way its bound moved (so `1 - t` and `x / t` judge right)."""
    old_body, new_body = old_doc["spec"]["conditions"][condition], new_doc["spec"]["conditions"][condition]
    effects = set()
    for item in new_body["indicators"]:
        before = comparisons(parse(item["when"], FACTS, {**new_body["thresholds"], name: old_body["thresholds"][name]}))
        after = comparisons(parse(item["when"], FACTS, new_body["thresholds"]))
        for a, b in zip(before, after, strict=True):
            if name not in a.thresholds:
                continue
            x, y = (a.value, b.value) if a.other is None else (a.factor, b.factor)
            if x is not None and y is not None and x != y:
                effects.add(_direction([_effective_op(a)], raised=y > x))
    old_value, new_value = old_body["thresholds"][name], new_body["thresholds"][name]
    for statistic in sequential_used(new_doc["spec"]["conditions"]):
        if statistic.condition == condition and name in statistic.thresholds and old_value != new_value:
            # a statistic alarms on a smaller change once its threshold is lowered, or its floor raised
            effects.add("stricter" if (new_value > old_value) == (name in statistic.floors) else "looser")
    effects.discard("")
    return effects.pop() if len(effects) == 1 else ("mixed" if effects else "")


def _effective_op(leaf: Compare) -> str:
    """A threshold multiplying another fact with a negative factor flips which way is stricter."""
    if leaf.other is not None and leaf.factor < 0:
        return {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(leaf.op, leaf.op)
    return leaf.op


def _indicator_effect(field: str, old: Any, new: Any, old_doc: Any, new_doc: Any, condition: str) -> str:
    if field == "severity" and isinstance(old, int | float) and isinstance(new, int | float):
        return "stricter" if new > old else "looser" if new < old else ""
    if field == "for":
        before = parse_duration(old) if old is not None else 0.0
        after = parse_duration(new) if new is not None else 0.0
        return "stricter" if after < before else "looser" if after > before else ""
    if field == "critical":
        return "stricter" if bool(new) and not bool(old) else "looser" if bool(old) and not bool(new) else ""
    if field == "when" and isinstance(old, str) and isinstance(new, str):
        old_leaves = comparisons(parse(old, FACTS, old_doc["spec"]["conditions"][condition].get("thresholds", {})))
        new_leaves = comparisons(parse(new, FACTS, new_doc["spec"]["conditions"][condition].get("thresholds", {})))
        if [(c.fact, c.op, c.other) for c in old_leaves] != [(c.fact, c.op, c.other) for c in new_leaves]:
            return ""
        effects = set()
        for a, b in zip(old_leaves, new_leaves, strict=True):
            x, y = (a.value, b.value) if a.other is None else (a.factor, b.factor)
            if x is not None and y is not None and x != y:
                effects.add(_direction([_effective_op(a)], raised=y > x))
        return effects.pop() if len(effects) == 1 else ("mixed" if effects else "")
    return ""


def _rule_effect(field: str, old: Any, new: Any) -> str:
    if field == "min_score" and isinstance(old, int | float) and isinstance(new, int | float):
        return "stricter" if new < old else "looser" if new > old else ""
    if field == "held_for" and isinstance(old, str) and isinstance(new, str):
        before, after = parse_duration(old), parse_duration(new)
        return "stricter" if after < before else "looser" if after > before else ""
    return ""
