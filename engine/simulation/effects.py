"""What changes in the challenger, by how much and from when: `accuracy:-0.07@2h`.

An effect is a kind, a size and a start time. Sizes are relative where that reads naturally:

    accuracy:-0.07     the challenger's accuracy x 0.93
    latency:+0.6       the challenger's latency scale (its lognormal median) x 1.6
    error_rate:+2.0    the challenger's error probabilities x 3
    confidence:0.2     the challenger's confidence Beta shifted lower until the binned KS
                       distance to the champion's is 0.2
    tail:0.02          2% of the challenger's requests slow (about 6 ms): its p99 doubles while
                       p50 and p95 barely move
    shared:-0.1        BOTH arms' accuracy x 0.9 (an upstream data shift): not a regression of
                       the challenger, so a study with only shared effects counts false cut-backs

`@` gives the start from the test's start: `@0` (the default) is bad from the first
snapshot, `@2h`, `@90m`, `@600s` or `@600` (seconds) later.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["accuracy", "latency", "error_rate", "confidence", "tail", "shared"]
KINDS: tuple[Kind, ...] = ("accuracy", "latency", "error_rate", "confidence", "tail", "shared")
# the policy condition an effect is meant to trip: its "condition delay"
CONDITION: dict[Kind, str] = {
    "accuracy": "accuracy",
    "latency": "latency",
    "error_rate": "error_rate",
    "confidence": "confidence_drift",
    "tail": "latency",
    "shared": "accuracy",
}
HARMLESS: frozenset[Kind] = frozenset({"shared"})  # effects that leave the challenger no worse than the champion
MAX_KS = 0.9  # a shift of the Beta reaches any binned KS distance below this
MAX_TAIL = 0.5  # at most half of the requests slow: beyond that it is a latency shift, not a tail
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_SPEC = re.compile(rf"(?P<kind>[a-z_]+):(?P<size>{_NUMBER})(?:@(?P<at>\d+(?:\.\d*)?|\.\d+)(?P<unit>[smh]?))?")
_SWEEP = re.compile(rf"(?P<kind>[a-z_]+):(?P<sizes>{_NUMBER}(?:,{_NUMBER})*)(?P<at>@.*)?")


class EffectError(ValueError):
    """An effect spec that cannot be read; the message names the spec and says what is wrong."""


@dataclass(frozen=True, slots=True)
class Effect:
    kind: Kind
    size: float
    at: float = 0.0  # seconds from the test's start

    @property
    def condition(self) -> str:
        return CONDITION[self.kind]

    @property
    def harmful(self) -> bool:
        """Whether the challenger is worse than the champion with it: a cut-back is then a detection."""
        return self.kind not in HARMLESS

    @property
    def spec(self) -> str:
        """The canonical text, which parse_effect reads back to the same effect."""
        return f"{self.kind}:{self.size:+g}@{format_at(self.at)}"

    def active(self, end: float) -> bool:
        """Whether the interval that ends at `end` (seconds from the start) is affected: any part after `at`."""
        return end > self.at

    def factor(self) -> float:
        """The multiplier of a relative effect (accuracy, latency, error_rate)."""
        return 1.0 + self.size


def format_at(seconds: float) -> str:
    if seconds == 0:
        return "0"
    for unit, scale in (("h", 3600.0), ("m", 60.0)):
        if seconds % scale == 0:
            return f"{seconds / scale:g}{unit}"
    return f"{seconds:g}s"


def parse_effect(text: str) -> Effect:
    """`kind:size[@at]` -> Effect; EffectError names the spec and what is wrong with it."""
    match = _SPEC.fullmatch(text.strip())
    if match is None:
        raise EffectError(
            f"bad effect {text!r}: write kind:size[@start], e.g. accuracy:-0.07@2h, latency:+0.6@0, confidence:0.2@1h"
        )
    at = float(match["at"]) * _UNITS[match["unit"] or ""] if match["at"] else 0.0
    return _checked(text, match["kind"], float(match["size"]), at)


def parse_sweep(text: str) -> list[Effect]:
    """`kind:size,size,...[@at]` -> one Effect per size (an operating characteristic)."""
    match = _SWEEP.fullmatch(text.strip())
    if match is None:
        raise EffectError(f"bad sweep {text!r}: write kind:size,size,...[@start], e.g. accuracy:-0.02,-0.05,-0.1@1h")
    at = match["at"] or ""
    return [parse_effect(f"{match['kind']}:{size}{at}") for size in match["sizes"].split(",")]


def _checked(text: str, kind: str, size: float, at: float) -> Effect:
    if kind not in KINDS:
        raise EffectError(f"bad effect {text!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if not math.isfinite(size) or not math.isfinite(at):
        raise EffectError(f"bad effect {text!r}: size and start must be finite")
    if kind in ("accuracy", "latency", "shared") and size <= -1:
        raise EffectError(f"bad effect {text!r}: a relative {kind} change must be > -1 (the arm keeps some)")
    if kind == "error_rate" and size < -1:
        raise EffectError(f"bad effect {text!r}: a relative error-rate change must be >= -1")
    if kind == "confidence" and not 0 <= size < MAX_KS:
        raise EffectError(f"bad effect {text!r}: a confidence shift is a KS distance in [0, {MAX_KS})")
    if kind == "tail" and not 0 <= size <= MAX_TAIL:
        raise EffectError(f"bad effect {text!r}: a tail effect is the share of slow requests, in [0, {MAX_TAIL}]")
    return Effect(next(known for known in KINDS if known == kind), size, at)
