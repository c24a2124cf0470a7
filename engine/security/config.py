"""The auth file (`abguard serve --auth FILE`): who holds which roles, what stays open, the limits.

    tokens:                       # static bearer tokens, known only by their SHA-256 (abguard auth token)
      - {name: gateway-eu, sha256: 9f86d0..., roles: [gateway]}
    jwt:                          # bearer JWTs signed by a key of the JWKS file
      {jwks_file: jwks.json, issuer: https://idp.example, audience: abguard, roles_claim: roles}
    clients:                      # verified mTLS client certificates (serve --tls-client-ca)
      - {common_name: gateway-1, roles: [gateway]}
    open: [health, metrics]       # served to anyone (the default); drop metrics to need a role for it
    limits: {requests_per_second: 200, burst: 400, tests_per_identity: 10000, watch_streams_per_identity: 4}

Paths are relative to the file. A bad file is refused at start with every problem named by its
path in the file (`tokens[1].roles[0]: 'admin' is not a role`), and nothing is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .identity import Authenticator, ClientRule, JwtRules, StaticToken, _read_jwks
from .limits import LimitSettings
from .roles import ROLES

OPENABLE = ("health", "metrics")

_ROLE_LIST = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": sorted(ROLES)}}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tokens": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "sha256", "roles"],
                "properties": {"name": _NAME, "sha256": _SHA256, "roles": _ROLE_LIST},
            },
        },
        "jwt": {
            "type": "object",
            "additionalProperties": False,
            "required": ["jwks_file", "issuer", "audience"],
            "properties": {
                "jwks_file": _NAME,
                "issuer": _NAME,
                "audience": _NAME,
                "algorithms": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": _ALGORITHMS}},
                "roles_claim": _NAME,
                "name_claim": _NAME,
                "leeway_seconds": {"type": "number", "minimum": 0, "maximum": 300},
            },
        },
        "clients": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["roles"],
                "minProperties": 2,
                "maxProperties": 3,
                "properties": {**dict.fromkeys(("common_name", "dns_name", "uri", "name"), _NAME), "roles": _ROLE_LIST},
            },
        },
        "open": {"type": "array", "uniqueItems": True, "items": {"enum": list(OPENABLE)}},
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "requests_per_second": {"type": "number", "exclusiveMinimum": 0},
                "burst": {"type": "integer", "minimum": 1},
                "tests_per_identity": {"type": "integer", "minimum": 1},
                "watch_streams_per_identity": {"type": "integer", "minimum": 1},
                "items_per_batch": {"type": "integer", "minimum": 1, "maximum": 100_000},
                "request_bytes": {"type": "integer", "minimum": 1024, "maximum": 1 << 30},
            },
        },
    },
}


class AuthFileError(ValueError):
    """The auth file cannot be used; the message names the file and every bad field."""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    authenticator: Authenticator | None  # None: no auth file, everyone may do everything
    open: frozenset[str]
    limits: LimitSettings
    source: str | None  # the file, for the serving line
    summary: dict[str, int]  # tokens, clients, jwt: what the file configures, for the serving line


def no_auth(limits: LimitSettings | None = None) -> AuthConfig:
    """No auth file: anyone who reaches the port holds every role (a development setup; serve warns)."""
    return AuthConfig(None, frozenset(OPENABLE), limits or LimitSettings(), None, {})


def load_auth(path: str | Path) -> AuthConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AuthFileError(f"{path}: cannot read it: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise AuthFileError(f"{path}: not YAML: {' '.join(str(error).split())[:300]}") from None
    data = {} if data is None else data
    problems = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.absolute_path))
    if problems:
        lines = "; ".join(f"{_where(p.absolute_path)}: {p.message[:200]}" for p in problems[:10])
        raise AuthFileError(f"{path}: {lines}")
    return _build(path, data)


def _build(path: Path, data: dict[str, Any]) -> AuthConfig:
    tokens = [StaticToken(t["name"], t["sha256"], frozenset(t["roles"])) for t in data.get("tokens", [])]
    names = [t.sha256 for t in tokens]
    if len(set(names)) != len(names):
        raise AuthFileError(f"{path}: tokens: two entries have the same sha256")
    clients = []
    for index, entry in enumerate(data.get("clients", [])):
        fields = [key for key in ("common_name", "dns_name", "uri") if key in entry]
        if len(fields) != 1:
            raise AuthFileError(f"{path}: clients[{index}]: give exactly one of common_name, dns_name, uri")
        value = entry[fields[0]]
        clients.append(ClientRule(fields[0], value, entry.get("name", value), frozenset(entry["roles"])))
    jwt_rules = None
    if "jwt" in data:
        raw = data["jwt"]
        jwks = (path.parent / raw["jwks_file"]).resolve()
        try:
            _read_jwks(jwks)
        except Exception as error:  # OSError, JSON, or a key PyJWT cannot use
            raise AuthFileError(f"{path}: jwt.jwks_file: {jwks}: {str(error)[:200]}") from None
        jwt_rules = JwtRules(
            jwks, raw["issuer"], raw["audience"], tuple(raw.get("algorithms", ["RS256", "ES256"])),
            raw.get("roles_claim", "roles"), raw.get("name_claim", "sub"), float(raw.get("leeway_seconds", 30)),
        )  # fmt: skip
    if not tokens and not clients and jwt_rules is None:
        raise AuthFileError(f"{path}: names no tokens, jwt or clients: nobody could call the service")
    limits = LimitSettings(**data.get("limits", {}))
    summary = {"tokens": len(tokens), "clients": len(clients), "jwt": int(jwt_rules is not None)}
    opened = frozenset(data.get("open", OPENABLE))
    return AuthConfig(Authenticator(tokens, jwt_rules, clients), opened, limits, str(path), summary)


def _where(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "$"
