"""A test's state outside the process (Redis, checkpoints): data only, sealed, checked on reading.

wire.py    typed values, bounds-checked reads; nothing names a type or a callable
layout.py  which values a state is, in order; decoding fills a fresh state of the policy
seal.py    HMAC-SHA256 over the bytes, the test, the log version, the policy and the layout
keys.py    the sealing key: a file, the environment, or the decision log's own
codec.py   dump / load for one policy and key; a blob that fails any check is rejected
"""

from __future__ import annotations

from .codec import CHECKPOINT, REDIS, StateCodec, StateRejectedError
from .keys import StateKeyError, configured_key, new_key, parse_key
from .layout import LAYOUT, CannotEncodeError

__all__ = [
    "CHECKPOINT",
    "LAYOUT",
    "REDIS",
    "CannotEncodeError",
    "StateCodec",
    "StateKeyError",
    "StateRejectedError",
    "configured_key",
    "new_key",
    "parse_key",
]
