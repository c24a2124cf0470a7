"""Webhook: abguard POSTs each flag change as signed JSON to a receiver that flips the flag itself.

The body is `{"event": "set_rollout" | "rollback", "flag": ..., "percent": ..., "sent_at": RFC 3339}`
(a rollback's percent is 0). `X-Abguard-Signature: sha256=<hex>` is the HMAC-SHA256 of the raw
body with the shared secret; `X-Abguard-Timestamp` repeats `sent_at`, which the signature covers
through the body, so a receiver can refuse old or replayed events. Any 2xx answer is success.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

from . import _http
from .base import DEFAULT_TIMEOUT, FlagError, check_percent

SIGNATURE_HEADER = "X-Abguard-Signature"
TIMESTAMP_HEADER = "X-Abguard-Timestamp"
_SCHEME = "sha256="


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, body: bytes) -> str:
    """The signature header's value for `body`."""
    return _SCHEME + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """For receivers: whether `header` signs these exact bytes with `secret` (compared in constant time)."""
    if not header or not header.startswith(_SCHEME):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookProvider:
    """Sends every flag change to one URL, signed with a shared secret."""

    name = "webhook"

    def __init__(
        self, url: str, secret: str | bytes, timeout: float = DEFAULT_TIMEOUT, clock: Callable[[], str] = _now
    ) -> None:
        if not secret:
            raise ValueError("webhook: an empty secret would sign nothing")
        self.url = url
        self.timeout = timeout
        self._secret = _key(secret)
        self._clock = clock

    def set_rollout(self, flag: str, percent: float) -> None:
        """Tell the receiver the challenger's share."""
        self._send("set_rollout", flag, check_percent(percent))

    def roll_back(self, flag: str) -> None:
        """Tell the receiver everyone gets the champion."""
        self._send("rollback", flag, 0.0)

    def _send(self, event: str, flag: str, percent: float) -> None:
        sent_at = self._clock()
        body = json.dumps({"event": event, "flag": flag, "percent": percent, "sent_at": sent_at}).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            TIMESTAMP_HEADER: sent_at,
        }
        answer = _http.call("POST", self.url, body, headers, self.timeout, "webhook")
        if not 200 <= answer.status < 300:
            raise FlagError(f"webhook: POST {self.url}: HTTP {answer.status}: {answer.excerpt()}")
