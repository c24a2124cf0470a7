"""A test's status over its decisions: the one place the transition is written.

A test runs until an enforced decision lowers its traffic (`reduced`) or rolls it back
(`rolled_back`); a rolled-back test stays rolled back until it is restarted. The live
engine and the rebuild from the decision log both go through `after`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract import Action, TestStatus


@dataclass(frozen=True, slots=True)
class TestHistory:
    """What the test's earlier decisions say, before this one."""

    rolled_back_at: str | None = None
    rolled_back_by: str | None = None
    reduced: bool = False

    def after(
        self, action: Action, enforced: bool, test_status: TestStatus, timestamp: str, triggered_by: str | None
    ) -> TestHistory:
        """The history once a decision with these fields is made."""
        if not enforced or self.rolled_back_at is not None:
            return self
        if Action(action).rolls_back:
            return TestHistory(timestamp, triggered_by, self.reduced)
        if test_status == TestStatus.REDUCED and not self.reduced:
            return TestHistory(None, None, True)
        return self

    def after_record(self, decision: dict[str, Any]) -> TestHistory:
        """`after` for a decision read back from the log."""
        return self.after(
            Action(decision["action"]),
            bool(decision["enforced"]),
            TestStatus(decision["test_status"]),
            decision["timestamp"],
            decision["triggered_by"],
        )


def status_word(
    enforced: bool, action: Action, target: float | None, current: float | None, history: TestHistory
) -> TestStatus:
    """The status a decision reports: what the test is once the gateway has applied it."""
    if not enforced:
        return TestStatus.RUNNING
    if action.rolls_back:
        return TestStatus.ROLLED_BACK
    lowered = target is not None and current is not None and target < current
    return TestStatus.REDUCED if history.reduced or lowered else TestStatus.RUNNING
