"""Watchers of the decision stream: a bounded queue each; one that falls behind is dropped."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

WATCH_QUEUE = 1000  # decisions a slow watcher may fall behind before it is dropped


@dataclass(eq=False)
class Watcher:
    test_ids: frozenset[str]
    actions: frozenset[str]
    queue: queue.Queue[dict[str, Any] | None] = field(default_factory=lambda: queue.Queue(WATCH_QUEUE))
    dropped: bool = False

    def wants(self, decision: dict[str, Any]) -> bool:
        return (not self.test_ids or decision["test_id"] in self.test_ids) and (
            not self.actions or decision["action"] in self.actions
        )


class Watchers:
    """The open watch streams; publishing never blocks the caller."""

    def __init__(self) -> None:
        self._watchers: list[Watcher] = []
        self._lock = threading.Lock()

    def open(self, test_ids: frozenset[str], actions: frozenset[str]) -> Watcher:
        watcher = Watcher(test_ids, actions)
        with self._lock:
            self._watchers.append(watcher)
        return watcher

    def close(self, watcher: Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def stream(self, watcher: Watcher, alive: Callable[[], bool], poll: float = 0.5) -> Iterator[dict[str, Any]]:
        """Decisions for a watcher until `alive()` is false, the stream is ended or it falls behind."""
        try:
            while alive() and not watcher.dropped:
                try:
                    item = watcher.queue.get(timeout=poll)
                except queue.Empty:
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.close(watcher)

    def publish(self, decision: dict[str, Any]) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            if watcher.wants(decision):
                try:
                    watcher.queue.put_nowait(decision)
                except queue.Full:
                    watcher.dropped = True

    def end_all(self) -> None:
        """Tell every watcher its stream is over (first step of a shutdown)."""
        with self._lock:
            for watcher in self._watchers:
                try:
                    watcher.queue.put_nowait(None)
                except queue.Full:
                    watcher.dropped = True
