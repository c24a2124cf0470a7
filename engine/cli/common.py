"""What several verbs share: loading the effective policy and reporting why it cannot be."""

from __future__ import annotations

import sys

from ..policy.model import Policy
from ..policy.policyset import PolicyError, load_effective


def load_policy(folder: str, profile: str | None, environment: str | None) -> Policy | None:
    """The effective policy, or None after printing every problem with its file:line."""
    try:
        return load_effective([folder], None if profile in (None, "none") else profile, environment)
    except PolicyError as error:
        for problem in error.diagnostics:
            print(problem.text(), file=sys.stderr)
        return None
