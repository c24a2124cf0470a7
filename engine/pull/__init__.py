"""Pull mode: snapshots built from Prometheus for gateways that do not push."""

from .config import PullConfig, PullConfigError, load_pull_config, parse_pull_config
from .loop import Prometheus, Puller, QueryError, snapshot

__all__ = [
    "Prometheus",
    "PullConfig",
    "PullConfigError",
    "Puller",
    "QueryError",
    "load_pull_config",
    "parse_pull_config",
    "snapshot",
]
