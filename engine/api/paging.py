"""Page tokens of ListDecisions, the same over gRPC and HTTP: the last seq of a page, opaque to callers."""

from __future__ import annotations

import base64

from ..contract import InputError


def page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode()


def cursor(token: str) -> int:
    """The seq a token names; InputError (`page_token`) for one this service did not give out."""
    try:
        seq = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        seq = -1
    if not 0 < seq < 2**62:
        raise InputError("page_token", "not a token this service gave out")
    return seq
