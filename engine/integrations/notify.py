"""Signed rollback notifications: each rollback event POSTed as JSON to a receiver of the operator's.

The body is one event: `rollback_opened` (test, trigger, reason, who asked), `rollback_overdue`
(a phase past its deadline, with the steps not done) or `rollback_recovery` (the recovery verdict
and score). Every body carries `event`, `test_id`, `rollback_id`, `decision_id` and `sent_at`
(RFC 3339, UTC). It is signed as the flag webhook is (`X-Abguard-Signature: sha256=<hex>`,
HMAC-SHA256 of the raw body; `X-Abguard-Timestamp` repeats `sent_at`), so receivers check it with
`engine.integrations.flags.verify_signature`. Any 2xx answer is success; anything else is a
NotificationError, which the rollback outbox retries.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .flags import _http
from .flags.base import FlagError
from .flags.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, _now, sign

DEFAULT_TIMEOUT = 5.0


class NotificationError(Exception):
    """The receiver did not take the event: no answer, or an answer that is not 2xx."""


class RollbackWebhook:
    """Posts rollback events to one URL, signed with a shared secret."""

    def __init__(
        self, url: str, secret: str, timeout: float = DEFAULT_TIMEOUT, clock: Callable[[], str] = _now
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"notify webhook: {url!r} is not an http:// or https:// URL")
        if not secret:
            raise ValueError("notify webhook: an empty secret would sign nothing")
        self.url = url
        self.timeout = timeout
        self._secret = secret.encode()
        self._clock = clock

    def send(self, event: dict[str, Any]) -> None:
        sent_at = self._clock()
        body = json.dumps({**event, "sent_at": sent_at}, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            TIMESTAMP_HEADER: sent_at,
        }
        try:
            answer = _http.call("POST", self.url, body, headers, self.timeout, "notify webhook")
        except FlagError as error:  # the shared HTTP helper speaks in flag errors
            raise NotificationError(str(error)) from error
        if not 200 <= answer.status < 300:
            raise NotificationError(f"notify webhook: POST {self.url}: HTTP {answer.status}: {answer.excerpt()}")
