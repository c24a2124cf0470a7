"""One door for both transports: who is calling, may they, and have they used up their share.

gRPC (engine/api/access.py) and HTTP (engine/http/access.py) read the credentials their own way and
ask the Gate; the answer is an Identity or a Denied naming the status, the missing role, and for
RESOURCE_EXHAUSTED how long to wait. The current identity of a call is in `CURRENT`, so the
service can record who did an operator action without every signature carrying it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..contract import InputError
from .config import AuthConfig, AuthFileError, load_auth
from .files import stamp
from .identity import Identity, Peer, Unauthenticated
from .limits import LimitError, Limits
from .roles import ROLES, Permission, needs

RECHECK_SECONDS = 1.0  # how often a call may look whether the auth file changed
ANONYMOUS_ROLES = frozenset(ROLES)  # no auth file: everyone holds every role
CURRENT: ContextVar[Identity | None] = ContextVar("abguard_identity", default=None)
Log = Callable[[dict[str, Any]], None]


class Denied(Exception):
    """A call refused before any work: `code` is the gRPC status name (HTTP maps it to 401/403/429)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


class Gate:
    def __init__(self, config: AuthConfig, log: Log | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.limits = Limits(config.limits)
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = clock()
        self._stamp = stamp(config.source)

    def refresh(self) -> None:
        """Reload the auth file when it changed, looked at most once a second: a token removed from it
        stops working within a second, no restart. A file that cannot be used keeps the last good one."""
        source = self.config.source
        if source is None or self._clock() - self._checked < RECHECK_SECONDS:
            return
        with self._lock:
            now = self._clock()
            if now - self._checked < RECHECK_SECONDS:
                return
            self._checked = now
            now_stamp = stamp(source)
            if now_stamp == self._stamp:
                return
            self._stamp = now_stamp
            try:
                config = load_auth(source)
            except AuthFileError as error:
                self._event({"event": "auth_reload_failed", "file": source, "why": str(error)[:500]})
                return
            self.limits.settings = config.limits  # (a gRPC message size is the server's: fixed at its start)
            self.config = config
            self._event({"event": "auth_reloaded", "file": source, **config.summary})

    @property
    def enforcing(self) -> bool:
        return self.config.authenticator is not None

    def is_open(self, what: str) -> bool:
        """Health and metrics: served to anyone unless the auth file leaves them out of `open`."""
        return what in self.config.open

    def admit(
        self, what: str, permission: Permission, authorization: str | None, peer: Peer | None, host: str
    ) -> Identity:
        """The caller's identity, allowed `permission` and within its rate; Denied otherwise."""
        identity = self.identify(authorization, peer, host, what)
        if not identity.may(permission):
            held = ", ".join(sorted(identity.roles)) or "no role"
            message = f"{what} needs {needs(permission)}; {identity.name} holds {held}"
            self._note("access_denied", what, identity.name, message)
            raise Denied("PERMISSION_DENIED", message)
        self._within_rate(identity.key, identity.name)
        return identity

    def identify(self, authorization: str | None, peer: Peer | None, host: str, what: str = "") -> Identity:
        self.refresh()
        authenticator = self.config.authenticator
        if authenticator is None:
            return Identity(f"anonymous@{host}", ANONYMOUS_ROLES, "anonymous")
        try:
            return authenticator.identify(authorization, peer)
        except Unauthenticated as error:
            self._within_rate(f"unauthenticated:{host}", f"unauthenticated callers from {host}")
            self._note("unauthenticated", what, f"unauthenticated@{host}", str(error))
            raise Denied("UNAUTHENTICATED", str(error)) from None

    def _within_rate(self, key: str, who: str) -> None:
        try:
            self.limits.admit(key, who)
        except LimitError as error:
            raise Denied("RESOURCE_EXHAUSTED", str(error), error.retry_after) from None

    def _note(self, event: str, what: str, who: str, why: str) -> None:
        self._event({"event": event, "call": what, "identity": who, "why": why[:300]})

    def _event(self, event: dict[str, Any]) -> None:
        if self._log is not None:
            self._log(event)


def limited_caller() -> Identity | None:
    """The current call's identity when per-identity limits count it: a known one (an auth file)."""
    identity = CURRENT.get()
    return identity if identity is not None and identity.via != "anonymous" else None


def known_caller() -> str | None:
    """The current call's identity when the server knows who calls (an auth file), else None."""
    identity = CURRENT.get()
    return identity.name if identity is not None and identity.via != "anonymous" else None


def requester(stated: str) -> str:
    """Who a manual rollback is recorded as: the authenticated identity, with the stated name when it
    differs; without an auth file only the stated name, which is then required."""
    who = known_caller()
    if who is None:
        if not stated.strip():
            raise InputError("requested_by", "required: who asks for the rollback (it is recorded)")
        return stated
    stated = stated.strip()[:200]
    return who if not stated or stated == who else f"{who} (for {stated})"


def restart_reason(reason: str) -> str:
    """A restart's recorded reason, with who restarted the test when the server knows."""
    who = known_caller()
    return reason if who is None else f"{reason} (restarted by {who})"


def operator_action(method: str, test_id: str, detail: dict[str, Any]) -> dict[str, Any]:
    """The service-log line of an operator action: what, on which test, by whom (any transport)."""
    identity = CURRENT.get()
    who = identity.name if identity is not None else None
    return {"event": "operator_action", "method": method, "identity": who, "test_id": test_id, **detail}
