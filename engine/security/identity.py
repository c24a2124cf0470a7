"""Who is calling: a bearer token (static and hashed, or a JWT checked against a JWKS file) or the
verified mTLS client certificate, mapped to roles by the auth file (engine/security/config.py).

A static token is a random secret the server knows only by its SHA-256: the file can be read
without giving anyone access. A bearer token, when sent, decides the identity; otherwise the client
certificate does. An identity the file does not know is UNAUTHENTICATED; a known one without the
role a call needs is PERMISSION_DENIED (engine/security/gate.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .files import stamp
from .roles import ROLES, Permission

if TYPE_CHECKING:  # PyJWT (and cryptography under it) load only when the auth file names a JWT issuer
    import jwt

TOKEN_PREFIX = "abg_"  # static tokens abguard issues: tell them apart from JWTs and other secrets at a glance
JWKS_RECHECK_SECONDS = 1.0  # how often a request may look whether the JWKS file changed (key rotation)


class Unauthenticated(Exception):
    """No identity, or a credential that proves none: UNAUTHENTICATED / 401."""


@dataclass(frozen=True, slots=True)
class Identity:
    name: str  # recorded with every operator action
    roles: frozenset[str]
    via: str  # token, jwt, mtls or anonymous (no auth file)

    @property
    def permissions(self) -> frozenset[Permission]:
        return _granted(self.roles)

    @property
    def key(self) -> str:
        """What limits count by: one bucket per identity, whatever credential proved it."""
        return f"{self.via}:{self.name}"

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions


class Peer(Protocol):
    """A verified client certificate's names (engine/security/tls.PeerCert)."""

    @property
    def common_name(self) -> str: ...

    @property
    def dns_names(self) -> tuple[str, ...]: ...

    @property
    def uris(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class StaticToken:
    name: str
    sha256: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class ClientRule:
    """A client certificate whose common name, DNS name or URI equals `value` holds `roles`."""

    field: str  # common_name, dns_name or uri
    value: str
    name: str
    roles: frozenset[str]

    def matches(self, peer: Peer) -> bool:
        if self.field == "common_name":
            return peer.common_name == self.value
        if self.field == "dns_name":
            return self.value in peer.dns_names
        return self.value in peer.uris


@dataclass(frozen=True, slots=True)
class JwtRules:
    jwks_file: Path
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    roles_claim: str
    name_claim: str
    leeway_seconds: float


@functools.cache
def _granted(roles: frozenset[str]) -> frozenset[Permission]:
    """What a set of roles may do: asked on every call, and there are few distinct sets."""
    return frozenset(p for role in roles for p in ROLES.get(role, ()))


def new_token() -> str:
    """A static token: 256 random bits, URL-safe, with abguard's prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Credentials -> Identity, under one auth file's tokens, JWT rules and client rules."""

    def __init__(
        self, tokens: Sequence[StaticToken], jwt_rules: JwtRules | None, clients: Sequence[ClientRule]
    ) -> None:
        self._tokens: Mapping[str, StaticToken] = {token.sha256: token for token in tokens}
        self._jwt = _JwtChecker(jwt_rules) if jwt_rules is not None else None
        self._clients = tuple(clients)

    def identify(self, authorization: str | None, peer: Peer | None) -> Identity:
        """The caller's identity; Unauthenticated when the credentials prove none."""
        if authorization:
            scheme, _, credential = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise Unauthenticated("the authorization header must be 'Bearer <token>'")
            return self._bearer(credential.strip())
        if peer is not None:
            for rule in self._clients:
                if rule.matches(peer):
                    return Identity(rule.name, rule.roles, "mtls")
            raise Unauthenticated(
                f"the client certificate (common name {peer.common_name[:80]!r}) is not in the auth file's clients"
            )
        raise Unauthenticated("this server needs a bearer token (authorization: Bearer ...) or a client certificate")

    def _bearer(self, token: str) -> Identity:
        if token.count(".") == 2 and self._jwt is not None and not token.startswith(TOKEN_PREFIX):
            return self._jwt.identify(token)
        known = self._tokens.get(token_hash(token))  # a dict of hashes: its timing says nothing about the token
        if known is None:
            raise Unauthenticated("the bearer token is not one this server knows (revoked, mistyped, or for another)")
        return Identity(known.name, known.roles, "token")


class _JwtChecker:
    """JWTs signed by a key of the JWKS file, for our issuer and audience, unexpired; the file is
    re-read when it changes, so a rotated key set needs no restart."""

    def __init__(self, rules: JwtRules) -> None:
        self.rules = rules
        self._lock = threading.Lock()
        self._keys: jwt.PyJWKSet = _read_jwks(rules.jwks_file)
        self._seen = stamp(rules.jwks_file)
        self._checked = time.monotonic()

    def identify(self, token: str) -> Identity:
        import jwt  # noqa: PLC0415  # loaded by _read_jwks already

        rules = self.rules
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(str(header.get("kid") or ""))
            claims = jwt.decode(
                token, key, algorithms=list(rules.algorithms), audience=rules.audience, issuer=rules.issuer,
                leeway=rules.leeway_seconds, options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"the JWT is not valid here: {str(error)[:200]}") from None
        name = claims.get(rules.name_claim)
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"the JWT has no {rules.name_claim!r} claim naming who it is")
        return Identity(name, _roles_of(claims.get(rules.roles_claim)), "jwt")

    def _key(self, kid: str) -> Any:
        self._refresh()
        keys = self._keys.keys
        for key in keys:
            if key.key_id == kid or (not kid and len(keys) == 1):
                return key.key
        raise Unauthenticated(f"the JWT's key id {kid[:60]!r} is not in the JWKS file")

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < JWKS_RECHECK_SECONDS:
            return
        with self._lock:
            self._checked = now
            now_stamp = stamp(self.rules.jwks_file)
            if now_stamp == self._seen:
                return
            try:
                self._keys = _read_jwks(self.rules.jwks_file)
            except Exception:  # a half-written or unreadable file (OSError, JSON, PyJWTError): keep the last good keys
                return
            self._seen = now_stamp


def _roles_of(claim: object) -> frozenset[str]:
    """Roles a JWT claims: a list of names, or one space-separated string (OAuth's `scope` style)."""
    names = claim.split() if isinstance(claim, str) else claim if isinstance(claim, list) else []
    return frozenset(str(name) for name in names if str(name) in ROLES)


def _read_jwks(path: Path) -> jwt.PyJWKSet:
    import jwt  # noqa: PLC0415  # only with a jwt section

    data = json.loads(path.read_text(encoding="utf-8"))
    return jwt.PyJWKSet.from_dict(data)
