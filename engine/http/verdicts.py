"""What the progressive-delivery controllers read (pure): Argo Rollouts' Web metric verdict and
Flagger's webhook answers, from a test's latest decision.

Argo Rollouts (Web metric provider): the verdict is always HTTP 200; an AnalysisTemplate's
conditions read `action` (deploy/argo/analysis-template.yaml): continue and increase_monitoring
pass, rollback and immediate_rollback fail, reduce_rollout and no decision yet (`action` null)
are inconclusive, which pauses the rollout for a person to judge.

Flagger reads a webhook's status: 200 is yes, anything above 202 is no (and 5xx is retried, so a
deliberate no is 409). On `rollback`, yes means "roll back now".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASSING = frozenset({"continue", "increase_monitoring"})
ROLLING_BACK = frozenset({"rollback", "immediate_rollback"})
ROLLED_BACK = frozenset({"rolled_back", "rollback_in_progress"})
HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback", "event")
YES, NO = 200, 409


@dataclass(frozen=True, slots=True)
class Latest:
    """A test's latest state as the controllers need it; `action` is None before any decision."""

    test_id: str
    action: str | None
    risk_score: float | None
    risk_level: str | None
    reason: str
    test_status: str  # running | reduced | rolled_back | rollback_in_progress | no_data
    policy: dict[str, Any]


def argo_verdict(latest: Latest) -> dict[str, Any]:
    """The body of GET /v1/tests/{test_id}/verdict."""
    return {
        "test_id": latest.test_id,
        "action": latest.action,
        "risk_score": latest.risk_score,
        "risk_level": latest.risk_level,
        "reason": latest.reason,
        "test_status": latest.test_status,
        "policy": latest.policy,
    }


def flagger_answer(hook: str, latest: Latest) -> tuple[int, str]:
    """The status Flagger reads for `hook`, and why, in a sentence."""
    if latest.test_status in ROLLED_BACK:
        rolled = f"test {latest.test_id} is {latest.test_status}: {latest.reason}"
        return (YES, f"roll back: {rolled}") if hook == "rollback" else (NO, f"halt: {rolled}")
    if latest.action is None:
        no_data = f"no decision yet for test {latest.test_id}"
        if hook in ("confirm-rollout", "pre-rollout", "post-rollout", "event"):
            return YES, f"go: {no_data} (traffic must reach the challenger before abguard can judge it)"
        if hook == "rollback":
            return NO, f"no rollback: {no_data}"
        return NO, f"halt: {no_data}"
    said = f"latest action {latest.action} (risk {latest.risk_level}, score {latest.risk_score}): {latest.reason}"
    if hook == "rollback":
        return (YES, f"roll back: {said}") if latest.action in ROLLING_BACK else (NO, f"no rollback: {said}")
    if hook in ("post-rollout", "event"):
        return YES, f"noted: {said}"
    if hook == "confirm-promotion":
        return (YES, f"promote: {said}") if latest.action == "continue" else (NO, f"hold promotion: {said}")
    return (YES, f"go: {said}") if latest.action in PASSING else (NO, f"halt: {said}")


def flagger_test_id(payload: dict[str, Any]) -> str:
    """`metadata.test_id`, else `namespace/name` of the canary."""
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError("metadata: must be a mapping of strings (Flagger's webhook metadata)")
    if isinstance(metadata, dict) and "test_id" in metadata:
        test_id = metadata["test_id"]
        if not isinstance(test_id, str) or not test_id.strip():
            raise ValueError("metadata.test_id: must be a non-empty string")
        return test_id
    name, namespace = payload.get("name"), payload.get("namespace")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name: required (the canary's name), or metadata.test_id")
    if not isinstance(namespace, str) or not namespace.strip():
        raise ValueError("namespace: required (the canary's namespace), or metadata.test_id")
    return f"{namespace}/{name}"
