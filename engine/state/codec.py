"""A test's state as a sealed blob for Redis or a checkpoint, and back, under one effective policy."""

from __future__ import annotations

from ..pipeline import TestState
from ..policy.model import Policy
from .layout import LAYOUT, Names, decode, encode
from .seal import seal, unseal
from .wire import StateFormatError

REDIS = "redis"  # a shared state, for the log's version N of the test
CHECKPOINT = "checkpoint"  # a checkpoint, for the decision with that seq


class StateRejectedError(ValueError):
    """A stored state that is not used: its seal, its layout or its values are wrong. `why` says which."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class StateCodec:
    """Writes and reads the states of one effective policy, sealed with one key."""

    layout = LAYOUT

    def __init__(self, policy: Policy, key: bytes) -> None:
        self.digest = policy.digest
        self._key = key
        self._template = TestState.start(policy)
        self._names = Names(policy)

    def dump(self, purpose: str, test_id: str, version: int, state: TestState) -> bytes:
        body = encode(state)
        return seal(self._key, purpose, test_id, version, self.digest, LAYOUT, body)

    def load(self, purpose: str, test_id: str, version: int, blob: bytes) -> TestState:
        """The state a blob holds; StateRejectedError when it fails any check (the caller rebuilds)."""
        try:
            body = unseal(self._key, purpose, test_id, version, self.digest, LAYOUT, bytes(blob))
            return decode(body, self._template, self._names)
        except StateFormatError as error:
            raise StateRejectedError(str(error)[:300]) from None
        except (ValueError, TypeError, OverflowError, MemoryError) as error:  # a check the layout missed
            raise StateRejectedError(f"{type(error).__name__}: {str(error)[:250]}") from None
