"""The one interface abguard flips feature flags through, the file that configures it, and the factory.

A flags config is its own YAML file; secrets never are in it, only the names of the environment
variables that hold them:

    provider: unleash            # flagd | unleash | webhook
    flag_prefix: "abtest-"       # flag key = prefix + test_id ...
    flags: {checkout-ranker: ranker-v2-rollout}   # ... unless mapped here
    unleash: {url: "http://127.0.0.1:4242", project: default, environment: production, token_env: UNLEASH_ADMIN_TOKEN}
"""

from __future__ import annotations

import math
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import yaml

PROVIDERS = ("flagd", "unleash", "webhook")
DEFAULT_TIMEOUT = 5.0  # seconds per HTTP call; the outbox retries, so a stuck server must not hold it


class FlagError(Exception):
    """A flag change did not reach the provider; raised so the durable outbox retries it."""


class FlagProvider(Protocol):
    """Where a test's challenger share lives: kept in step while the test runs, zeroed on rollback."""

    name: str

    def set_rollout(self, flag: str, percent: float) -> None:
        """Give the challenger `percent` (0..100) of the traffic."""

    def roll_back(self, flag: str) -> None:
        """Give everyone the champion; doing it twice is the same as once."""


def check_percent(percent: float) -> float:
    """The challenger share as a float in 0..100; anything else is the caller's bug, not a retryable failure."""
    value = float(percent)
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"percent must be within 0..100, got {percent!r}")
    return value


@dataclass(frozen=True)
class FlagdConfig:
    """The flag definitions file abguard owns (JSON, flagd's format)."""

    path: Path


@dataclass(frozen=True)
class UnleashConfig:
    """An Unleash server's Admin API, and the environment variable holding its admin token."""

    url: str
    token_env: str
    project: str = "default"
    environment: str = "development"
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class WebhookConfig:
    """A receiver of signed JSON events, and the environment variable holding the shared secret."""

    url: str
    secret_env: str
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class FlagsConfig:
    """Which provider abguard flips, and which flag belongs to which test."""

    provider: str
    flag_prefix: str = ""
    flags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    flagd: FlagdConfig | None = None
    unleash: UnleashConfig | None = None
    webhook: WebhookConfig | None = None

    def flag_key(self, test_id: str) -> str:
        """The flag of a test: its mapped key, or the prefix and the test id."""
        return self.flags.get(test_id, self.flag_prefix + test_id)


def _fail(where: str, problem: str) -> ValueError:
    return ValueError(f"flags config: {where}: {problem}")


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _no_unknown(section: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in section:
        if key not in known:
            prefix = f"{where}." if where else ""
            raise _fail(f"{prefix}{key}", f"unknown field (known: {', '.join(known)})")


def _text(section: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = section.get(key, default)
    if value is None:
        raise _fail(f"{where}.{key}", "is required")
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
    return value


def _url(section: dict[str, Any], where: str) -> str:
    value = _text(section, "url", where)
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"{where}.url", f"must be an http(s) URL with a host, got {value!r}")
    return value.rstrip("/")


def _env_name(section: dict[str, Any], key: str, where: str) -> str:
    value = _text(section, key, where)
    if not value.replace("_", "").isalnum() or value[0].isdigit():
        problem = "must name an environment variable (the secret itself never goes here)"
        raise _fail(f"{where}.{key}", f"{problem}, got {value!r}")
    return value


def _timeout(section: dict[str, Any], where: str) -> float:
    value = section.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 300:
        raise _fail(f"{where}.timeout", f"must be seconds in (0, 300], got {value!r}")
    return float(value)


def _flagd(section: dict[str, Any], base: Path) -> FlagdConfig:
    _no_unknown(section, ("path",), "flagd")
    path = Path(_text(section, "path", "flagd"))
    if path.suffix != ".json":
        raise _fail("flagd.path", f"must be a .json file (abguard writes flagd's JSON format), got {str(path)!r}")
    return FlagdConfig(path=path if path.is_absolute() else base / path)


def _unleash(section: dict[str, Any]) -> UnleashConfig:
    _no_unknown(section, ("url", "project", "environment", "token_env", "timeout"), "unleash")
    return UnleashConfig(
        url=_url(section, "unleash"),
        token_env=_env_name(section, "token_env", "unleash"),
        project=_text(section, "project", "unleash", "default"),
        environment=_text(section, "environment", "unleash", "development"),
        timeout=_timeout(section, "unleash"),
    )


def _webhook(section: dict[str, Any]) -> WebhookConfig:
    _no_unknown(section, ("url", "secret_env", "timeout"), "webhook")
    return WebhookConfig(
        url=_url(section, "webhook"),
        secret_env=_env_name(section, "secret_env", "webhook"),
        timeout=_timeout(section, "webhook"),
    )


def parse_flags_config(document: object, base: Path) -> FlagsConfig:
    """A validated FlagsConfig from parsed YAML; a relative flagd.path is taken from `base`."""
    top = _mapping(document, "(top level)")
    _no_unknown(top, ("provider", "flag_prefix", "flags", "flagd", "unleash", "webhook"), "")
    provider = top.get("provider")
    if provider not in PROVIDERS:
        raise _fail("provider", f"must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    prefix = top.get("flag_prefix", "")
    if not isinstance(prefix, str):
        raise _fail("flag_prefix", f"must be a string, got {prefix!r}")
    flags = _mapping(top.get("flags") or {}, "flags")
    for test_id, key in flags.items():
        if not isinstance(test_id, str) or not isinstance(key, str) or not key.strip():
            raise _fail(f"flags.{test_id}", f"must map a test id to a non-empty flag key, got {key!r}")
    if top.get(provider) is None:
        raise _fail(provider, f"is required when provider is {provider}")
    sections = {name: _mapping(top[name], name) for name in PROVIDERS if top.get(name) is not None}
    return FlagsConfig(
        provider=provider,
        flag_prefix=prefix,
        flags=MappingProxyType(dict(flags)),
        flagd=_flagd(sections["flagd"], base) if "flagd" in sections else None,
        unleash=_unleash(sections["unleash"]) if "unleash" in sections else None,
        webhook=_webhook(sections["webhook"]) if "webhook" in sections else None,
    )


def load_flags_config(path: str | Path) -> FlagsConfig:
    """Read and validate a flags config file; every problem is a ValueError naming the field."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"flags config: {source}: cannot read: {error.strerror or error}") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"flags config: {source}: not YAML: {error}") from error
    return parse_flags_config(document, source.resolve().parent)


def _secret(environ: Mapping[str, str], name: str, where: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise _fail(where, f"the environment variable {name} is not set")
    return value


def build_provider(config: FlagsConfig, environ: Mapping[str, str] | None = None) -> FlagProvider:
    """The configured provider, its secret read from the environment now, so a missing one fails at start."""
    # Imported here: each provider module imports FlagError from this one.
    from .flagd import FlagdFileProvider  # noqa: PLC0415
    from .unleash import UnleashProvider  # noqa: PLC0415
    from .webhook import WebhookProvider  # noqa: PLC0415

    env = os.environ if environ is None else environ
    if config.provider == "flagd" and config.flagd is not None:
        return FlagdFileProvider(config.flagd.path)
    if config.provider == "unleash" and config.unleash is not None:
        section = config.unleash
        return UnleashProvider(
            section.url,
            _secret(env, section.token_env, "unleash.token_env"),
            project=section.project,
            environment=section.environment,
            timeout=section.timeout,
        )
    if config.provider == "webhook" and config.webhook is not None:
        hook = config.webhook
        return WebhookProvider(hook.url, _secret(env, hook.secret_env, "webhook.secret_env"), hook.timeout)
    raise _fail(config.provider, f"is required when provider is {config.provider}")
