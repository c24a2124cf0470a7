"""What several verbs share: loading the effective policy, usage errors, option types and env defaults."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..policy.model import Policy
from ..policy.policyset import DEFAULT_PROFILE, PolicyError, load_effective


class UsageError(Exception):
    """The command line cannot be run as given: main() prints the message on one line and exits 2."""


def require_policies(folder: str) -> None:
    """A policy folder (or file) that does not exist is a usage error, not an invalid policy."""
    if not Path(folder).exists():
        raise UsageError(f"no such policy folder: {folder}")


def load_policy(folder: str, profile: str | None, environment: str | None) -> Policy | None:
    """The effective policy, or None after printing every problem with its file:line.

    Raises UsageError when `folder` does not exist."""
    require_policies(folder)
    try:
        return load_effective([folder], None if profile in (None, "none") else profile, environment)
    except PolicyError as error:
        for problem in error.diagnostics:
            print(problem.text(), file=sys.stderr)
        return None


def positive_int(text: str) -> int:
    """argparse `type=`: a whole number of at least 1 (worker counts, limits)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def env_default(name: str, default: str | None) -> str | None:
    """An option's default from ABGUARD_<name>, as text: argparse applies the option's `type` to a string
    default only when it parses, so a bad value becomes that verb's usage error instead of breaking every verb."""
    return os.environ.get(f"ABGUARD_{name}", default)


def add_policy_selection(parser: argparse.ArgumentParser) -> None:
    """--policies, --profile, --env: which effective policy a verb runs (--policy is the old spelling)."""
    parser.add_argument(
        "--policies", "--policy", dest="policies", default="policies", metavar="DIR",
        help="policy folder (default: policies)",
    )  # fmt: skip
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="profile overlay, or 'none' (default: balanced)")
    parser.add_argument("--env", default=None, help="environment overlay (dev, staging, prod); default none")
