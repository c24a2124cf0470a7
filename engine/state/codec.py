"""A test's state as a sealed blob for Redis or a checkpoint, and back, under one effective policy."""

from __future__ import annotations

from ..pipeline import TestState
from ..policy.model import Policy
from .layout import Names, decode, encode, layout_id
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

    def __init__(self, policy: Policy, key: bytes) -> None:
        self.digest = policy.digest
        self._key = key
        self._template = TestState.start(policy)
        self._names = Names(policy)
        self.layout = layout_id(self._template)  # this build's layout of this policy's state

    def dump(self, purpose: str, test_id: str, version: int, state: TestState, bound: str = "") -> bytes:
        """`bound`: more context the seal covers (the shared state: the hash of the log's last decision)."""
        body = encode(state)
        return seal(self._key, purpose, test_id, version, self.digest, self.layout, body, bound)

    def load(self, purpose: str, test_id: str, version: int, blob: bytes, bound: str = "") -> TestState:
        """The state a blob holds; StateRejectedError when it fails any check (the caller rebuilds)."""
        try:
            body = unseal(self._key, purpose, test_id, version, self.digest, self.layout, bytes(blob), bound)
            return decode(body, self._template, self._names)
        except StateFormatError as refused:
            raise StateRejectedError(str(refused)[:300]) from None
        # a check the layout missed (one name per clause: compiled by mypyc, a shared name takes the first's type)
        except (ValueError, TypeError, OverflowError, MemoryError) as missed:
            raise StateRejectedError(f"{type(missed).__name__}: {str(missed)[:250]}") from None
