"""Per-test engine state in Redis, shared by the replicas: a cache of what the decision log implies.

Each test's entry holds the state right after the log's version N of that test (N: how many
writes the log holds of it) and the hash of the test's last logged decision, with the policy
digest and state format it was built under. It is written inside the log's transaction, before
the commit: when Redis cannot take it, nothing is committed. A replica whose own copy is older
than the log's version reads this entry and uses it only when both the version and the last
decision's hash match the log; otherwise (a commit that failed after the write, Redis lost it)
it rebuilds the state from the log. A write never replaces a newer version (a script compares
them in Redis), so a slow replica cannot put an old state back.

Redis failures raise StateUnavailableError: the service stops serving (UNAVAILABLE, health
NOT_SERVING) until a probe gets an answer. Entries expire after TTL_SECONDS unused: the log
still has everything.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import LogWriteError, SharedState

TTL_SECONDS = 7 * 24 * 3600
_PUT = """
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2], 'f', ARGV[3], 's', ARGV[4], 'h', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


# One Redis command waits at most this long, twice: a call's few commands stay well inside a
# gateway's deadline (redis-py's default, 3 retries with backoff, turned a silent Redis into
# DEADLINE_EXCEEDED for clients with deadlines of 5 s or less, instead of UNAVAILABLE).
REDIS_TIMEOUT = 0.5


class StateUnavailableError(LogWriteError):
    """Redis did not answer: nothing was decided (retry), or the decision is logged and only the cache is behind."""


class RedisStates:
    """The per-test state cache; `url` redis://host:port/db, with an optional ?prefix= for its keys."""

    def __init__(self, url: str, timeout: float = REDIS_TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        self.prefix = (query.pop("prefix", ["abguard"]) or ["abguard"])[0]
        rest = urllib.parse.urlencode({key: values[-1] for key, values in query.items()})
        self.url = urllib.parse.urlunsplit(parts._replace(query=rest))
        self._redis: redis.Redis = redis.Redis.from_url(
            self.url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30,
            retry=Retry(NoBackoff(), 1),  # once at once (a connection a restart broke), never 3 times with backoff
        )  # fmt: skip
        self._put: Any = self._redis.register_script(_PUT)

    @property
    def where(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"redis://{parts.hostname}:{parts.port or 6379}{parts.path} (prefix {self.prefix!r})"

    def get(self, test_id: str) -> SharedState | None:
        try:
            found = self._redis.hmget(self._key(test_id), ["v", "d", "f", "s", "h"])
        except redis.RedisError as error:
            raise StateUnavailableError(f"the shared state at {self.where} cannot be read: {error}") from error
        values = [value for value in found if isinstance(value, bytes)]  # the client does not decode responses
        if len(values) != len(found):
            return None
        version, digest, layout, state, last = values
        try:
            return SharedState(int(version), digest.decode(), int(layout), state, last.decode())
        except (ValueError, UnicodeDecodeError):  # not an entry of ours: the log rebuilds the state instead
            return None

    def put(self, entries: dict[str, SharedState]) -> None:
        """Keep these entries (one round trip), each unless Redis holds a newer version of its test."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for test_id, entry in entries.items():
                args = [entry.version, entry.policy_digest, entry.format, entry.state, TTL_SECONDS, entry.last_hash]
                self._put(keys=[self._key(test_id)], args=args, client=pipe)
            pipe.execute()
        except redis.RedisError as error:
            raise StateUnavailableError(f"the shared state at {self.where} cannot be written: {error}") from error

    def probe(self) -> None:
        try:
            self._redis.ping()
        except redis.RedisError as error:
            raise StateUnavailableError(f"the shared state at {self.where} does not answer: {error}") from error

    def close(self) -> None:
        self._redis.close()

    def _key(self, test_id: str) -> str:
        return f"{self.prefix}:state:{test_id}"
