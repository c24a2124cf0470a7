"""The challenger's target traffic: rollbacks set 0, `set_rollout` caps it, `reduce_rollout`
cuts it once per episode.

A relative cut applies once per episode: the target it sets when its condition or rule
starts to hold stays until that stops holding, so a gateway that applied it is not cut
again on every snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..contract import Action, NamedAction
from ..policy.model import DecisionRule


@dataclass(frozen=True, slots=True)
class Traffic:
    target: float | None
    lowered_by: list[str]  # why conditions lowered it below the current rollout, in words
    cuts: dict[str, float]  # traffic cuts in force, by source: pass back in next time


def traffic(
    current: float | None, rule: DecisionRule, named: list[NamedAction], episodes: Mapping[str, float]
) -> Traffic:
    cuts = _asked(current, rule, named, episodes)
    target = 0.0 if Action(rule.action).rolls_back else current
    lowered_by: list[str] = []
    for key, (value, why) in cuts.items():
        if target is None or value < target:
            target = value
        if not key.startswith("rule:") and (current is None or value < current):
            lowered_by.append(why)
    return Traffic(target, lowered_by, {key: value for key, (value, _) in cuts.items()})


def _asked(
    current: float | None, rule: DecisionRule, named: list[NamedAction], episodes: Mapping[str, float]
) -> dict[str, tuple[float, str]]:
    """Traffic targets asked for now, by source, with the words that explain each."""
    cuts: dict[str, tuple[float, str]] = {}
    factor = (rule.params or {}).get("factor")
    if rule.action == Action.REDUCE_ROLLOUT and isinstance(factor, int | float) and current is not None:
        key = f"rule:{rule.name}"
        cuts[key] = (episodes.get(key, current * factor), f"rule {rule.name} reduces by factor {factor}")
    for item in named:
        key = f"{item.condition}:{item.name}"
        if item.name == "set_rollout":
            percent = float(item.params["percent"])
            _keep_lower(cuts, key, percent, f"{item.condition} asks for set_rollout to {percent:g}%")
        elif item.name == "reduce_rollout" and current is not None:
            factor = float(item.params["factor"])
            value = episodes.get(key, current * factor)
            why = f"{item.condition} asks for reduce_rollout by factor {factor:g} (to {value:g}%)"
            _keep_lower(cuts, key, value, why)
    return cuts


def _keep_lower(cuts: dict[str, tuple[float, str]], key: str, value: float, why: str) -> None:
    """One cut per condition and action: a condition's own and a fired indicator's `reduce_rollout` with
    other params share it, and the stricter (lower) target stands, not whichever came last."""
    if key not in cuts or value < cuts[key][0]:
        cuts[key] = (value, why)
