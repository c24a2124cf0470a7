"""Feature-flag providers abguard flips itself: the challenger's share while a test runs, zero on rollback."""

from .base import (
    FlagError,
    FlagProvider,
    FlagsConfig,
    build_provider,
    load_flags_config,
    parse_flags_config,
)
from .flagd import FlagdFileProvider
from .unleash import UnleashProvider
from .webhook import WebhookProvider, verify_signature

__all__ = [
    "FlagError",
    "FlagProvider",
    "FlagdFileProvider",
    "FlagsConfig",
    "UnleashProvider",
    "WebhookProvider",
    "build_provider",
    "load_flags_config",
    "parse_flags_config",
    "verify_signature",
]
