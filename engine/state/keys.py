"""Where the key that seals states comes from: a file, the environment, or the decision log's database.

A configured key (`--state-key-file`, or `ABGUARD_STATE_KEY` holding it) is hex text of at least
32 bytes (`openssl rand -hex 32`). Without one, the decision log keeps a key it generated at its
first start (`DecisionLog.state_key`): every replica on that database shares it with no setting,
and whoever can write only Redis cannot read it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from ..store import STATE_KEY_BYTES

MIN_KEY_BYTES = STATE_KEY_BYTES
ENV = "ABGUARD_STATE_KEY"


class StateKeyError(ValueError):
    """A configured key that cannot be used; the message names where it came from and the fix."""


def new_key() -> bytes:
    return secrets.token_bytes(MIN_KEY_BYTES)


def parse_key(text: str, where: str) -> bytes:
    value = text.strip()
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise StateKeyError(f"{where}: the state key must be hex text (make one with `openssl rand -hex 32`)") from None
    if len(key) < MIN_KEY_BYTES:
        raise StateKeyError(f"{where}: the state key has {len(key)} bytes; it needs at least {MIN_KEY_BYTES}")
    return key


def configured_key(path: str | None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key from --state-key-file, else ABGUARD_STATE_KEY, else None (the log's own key is used)."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise StateKeyError(f"--state-key-file {path}: cannot be read ({error})") from error
        return parse_key(text, f"--state-key-file {path}")
    value = (os.environ if environ is None else environ).get(ENV)
    return parse_key(value, ENV) if value else None
