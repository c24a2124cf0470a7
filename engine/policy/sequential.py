"""Which sequential statistics a policy uses: the ones its indicators' expressions mention."""

from __future__ import annotations

import re
from typing import Any

from .catalog import SEQUENTIAL, SequentialStatistic


def sequential_used(conditions: Any) -> list[SequentialStatistic]:
    """The sequential statistics whose facts some indicator's `when` mentions: the ones the
    engine runs and the false-alarm budget is split over."""
    texts = [
        item["when"]
        for body in (conditions.values() if isinstance(conditions, dict) else ())
        if isinstance(body, dict) and isinstance(body.get("indicators"), list)
        for item in body["indicators"]
        if isinstance(item, dict) and isinstance(item.get("when"), str)
    ]
    return [s for s in SEQUENTIAL if any(re.search(rf"\b{re.escape(s.stem)}_[a-z]+\b", text) for text in texts)]
