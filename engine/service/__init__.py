"""The running service's domain: the guard (decide, log, then commit), watchers, rebuild on start, evidence."""

from __future__ import annotations

from .guard import Guard, RebuildingError, TestView, UnknownTestError
from .watchers import Watcher

__all__ = ["Guard", "RebuildingError", "TestView", "UnknownTestError", "Watcher"]
