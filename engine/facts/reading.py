"""What every condition's facts module gives back, and the shape each one has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, Self

from ..contract import Snapshot
from ..policy.model import Condition


@dataclass(slots=True)
class Reading:
    """One condition's sample count in its window and its facts (names without the prefix)."""

    samples: float
    facts: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Callable[[], str]] = field(default_factory=dict)  # fact -> says a sequential statistic in words
    inconclusive: str = ""  # why the condition cannot be judged now, though it has samples (stale labels)
    label_lag: dict[str, float] = field(default_factory=dict)  # arm -> seconds its labels lag behind (accuracy)


class ConditionWindow(Protocol):
    """A condition's memory of a test: immutable; `add` returns the next one."""

    @classmethod
    def start(cls, condition: Condition) -> Self: ...

    def add(self, s: Snapshot) -> Self: ...

    def read(self, s: Snapshot, condition: Condition) -> Reading: ...

    @property
    def nbytes(self) -> int: ...
