"""Errors a caller can cause, each naming the field to blame, with bounded quotes of bad values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EXCERPT = 40  # characters of a bad value quoted back: enough to recognise it, never a flood
SHOWN = 5  # violations spelled out in an error's one-line message; the rest are counted


@dataclass(frozen=True, slots=True)
class Violation:
    field: str  # dotted path of the offending value, e.g. challenger.latency_ms.p95
    message: str


class InputError(ValueError):
    """A snapshot (or request) that breaks the contract; `violations` lists every bad field."""

    def __init__(self, field: str | Sequence[Violation], message: str = "") -> None:
        violations = [Violation(field, message)] if isinstance(field, str) else list(field)
        if not violations:
            raise ValueError("an InputError needs at least one violation")
        self.violations = violations
        self.field = violations[0].field
        self.message = violations[0].message
        shown = "; ".join(f"{v.field}: {v.message}" for v in violations[:SHOWN])
        if len(violations) > SHOWN:
            shown += f"; and {len(violations) - SHOWN} more"
        super().__init__(shown)

    def under(self, prefix: str) -> InputError:
        """The same violations with their fields named from an enclosing message (snapshot.x)."""
        return InputError([Violation(f"{prefix}.{v.field}", v.message) for v in self.violations])


class OutOfOrderError(ValueError):
    """A snapshot older than the test's last one: windows only move forward."""

    def __init__(self, test_id: str, timestamp: str, last: str) -> None:
        super().__init__(f"timestamp: {timestamp} is older than test {excerpt(test_id)}'s last snapshot at {last}")
        self.field = "timestamp"
        self.test_id = test_id


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """repr() of a value cut to `limit` characters, so an error message stays small."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value) if not isinstance(value, str) or len(value) <= 4 * limit else repr(value[: 4 * limit])
    if len(text) > limit:
        size = f" ({len(value)} characters)" if isinstance(value, str) else ""
        return text[: limit - 3] + "..." + size
    return text


def kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
