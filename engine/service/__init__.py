"""The running service's domain: the guard (decide, log, then commit), watchers, rebuild on start, evidence."""

from __future__ import annotations

from .guard import (
    Guard,
    RebuildingError,
    RollbacksUnavailableError,
    TestView,
    UnknownRollbackError,
    UnknownTestError,
)
from .rollbacks import Rollbacks
from .watchers import Watcher

__all__ = [
    "Guard",
    "RebuildingError",
    "Rollbacks",
    "RollbacksUnavailableError",
    "TestView",
    "UnknownRollbackError",
    "UnknownTestError",
    "Watcher",
]
