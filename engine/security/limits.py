"""Per-identity limits: a request rate, the tests one identity may feed, the watch streams it may hold.

Past a limit a call gets RESOURCE_EXHAUSTED (429) at once, with how long to wait when waiting helps,
instead of a queue that slows every caller down. Limits are per serving process: behind N replicas
an identity may use N times the rate (the README says so).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

TRACKED = 100_000  # identities (or anonymous addresses) remembered at once; the least recent go first


class LimitError(Exception):
    """A limit was reached: RESOURCE_EXHAUSTED, with seconds to wait (None: waiting alone will not help)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class LimitSettings:
    requests_per_second: float | None = None  # None: no rate limit
    burst: int | None = None  # requests at once after a quiet spell (default: one second's worth, at least 1)
    tests_per_identity: int = 10_000
    watch_streams_per_identity: int = 4
    items_per_batch: int = 1000  # snapshots in one EvaluateBatch request or stream message
    request_bytes: int = 4 << 20  # one gRPC message or HTTP body


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level, self.stamp = level, stamp


class Limits:
    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._tests: OrderedDict[str, set[str]] = OrderedDict()
        self._watches: dict[str, int] = {}

    @property
    def burst(self) -> float:
        rate = self.settings.requests_per_second or 0.0
        return float(self.settings.burst or max(1, round(rate)))

    def admit(self, who: str, label: str | None = None) -> None:
        """Count one request of `who` (named `label` in the error); LimitError with the wait when its rate is spent."""
        rate = self.settings.requests_per_second
        if rate is None:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(who, None) or _Bucket(self.burst, now)
            bucket.level = min(self.burst, bucket.level + (now - bucket.stamp) * rate)
            bucket.stamp = now
            self._buckets[who] = bucket
            _trim(self._buckets)
            if bucket.level >= 1.0:
                bucket.level -= 1.0
                return
            wait = (1.0 - bucket.level) / rate
        raise LimitError(f"{label or who} sent more than {rate:g} requests a second; retry in {wait:.2f} s", wait)

    def feed(self, who: str, test_ids: Iterable[str]) -> None:
        """Note the tests `who` sends snapshots of; LimitError (and nothing noted) past its share."""
        cap = self.settings.tests_per_identity
        with self._lock:
            known = self._tests.pop(who, None) or set()
            self._tests[who] = known
            _trim(self._tests)
            new = {test_id for test_id in test_ids if test_id not in known}
            if len(known) + len(new) > cap:
                raise LimitError(
                    f"{who} already sends snapshots of {len(known)} tests and this adds {len(new)}: at most {cap}"
                    " tests per identity (limits.tests_per_identity)"
                )
            known |= new

    @contextmanager
    def watching(self, who: str) -> Iterator[None]:
        """Hold one of `who`'s watch streams for the block; LimitError when all are taken."""
        cap = self.settings.watch_streams_per_identity
        with self._lock:
            open_now = self._watches.get(who, 0)
            if open_now >= cap:
                raise LimitError(f"{who} holds {open_now} watch streams, the most allowed; close one first")
            self._watches[who] = open_now + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._watches.get(who, 1) - 1
                if left > 0:
                    self._watches[who] = left
                else:
                    self._watches.pop(who, None)


def _trim(recent: OrderedDict[str, Any]) -> None:
    while len(recent) > TRACKED:
        recent.popitem(last=False)
