"""The deployment examples, read as their tools read them: the Kubernetes manifests against the
Kubernetes schemas (kubernetes-validate), the policy ConfigMap against the shipped policy, the Argo
AnalysisTemplate's conditions and the Flagger Canary's webhooks against a running abguard."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from engine.policy import load_effective
from tests.test_http import Server, evaluate_grpc, running, scenario

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = "1.30"
CONFIGMAP = DEPLOY / "kubernetes" / "policy-configmap.yaml"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", sorted((DEPLOY / "kubernetes").glob("*.yaml")), ids=lambda p: p.name)
def test_the_kubernetes_manifests_are_valid_kubernetes(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def configmap_text() -> str:
    policy = (ROOT / "policies" / "default.yaml").read_text()
    body = "".join(f"    {line}\n" if line else "\n" for line in policy.splitlines())
    return (
        "# The policy abguard runs in the cluster: policies/default.yaml, mounted over the image's.\n"
        "# Made by the tests from policies/default.yaml; ABGUARD_UPDATE_GOLDEN=1 make test rewrites it.\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: abguard-policy\n  namespace: abguard\n"
        f"data:\n  default.yaml: |\n{body}"
    )


def test_the_policy_configmap_holds_the_shipped_default_policy(tmp_path: Path) -> None:
    if os.environ.get("ABGUARD_UPDATE_GOLDEN"):
        CONFIGMAP.write_text(configmap_text())
    assert CONFIGMAP.read_text() == configmap_text(), "stale: ABGUARD_UPDATE_GOLDEN=1 make test rewrites it"
    [configmap] = documents(CONFIGMAP)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "default.yaml").write_text(configmap["data"]["default.yaml"])
    assert load_effective([str(folder)]).digest == load_effective([str(ROOT / "policies")]).digest


def test_the_deployment_probes_and_ports_are_the_service_s() -> None:
    deployment = next(d for d in documents(DEPLOY / "kubernetes" / "abguard.yaml") if d["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--http", "0.0.0.0:8080"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["grpc"]["port"] == 50051
    assert {p["containerPort"] for p in container["ports"]} == {50051, 8080}


# --- the controllers' reading of a running abguard ----------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("deploy") / "data") as server:
        rows = scenario("healthy") + scenario("accuracy_regression") + scenario("sustained_medium_risk")[:22]
        evaluate_grpc(server, rows)
        yield server


def argo_outcome(metric: dict[str, Any], result: dict[str, Any]) -> str:
    """What Argo Rollouts makes of one measurement: its conditions read `result` (the jsonPath {$})."""

    def holds(condition: str) -> bool:
        match = re.fullmatch(r"result\.(\w+) in (\[.*\])", condition.strip())
        assert match, f"condition outside what this reader understands: {condition}"
        return result.get(match.group(1)) in json.loads(match.group(2))

    if holds(metric["failureCondition"]):
        return "Failed"
    if holds(metric["successCondition"]):
        return "Successful"
    return "Inconclusive"


def test_argo_reads_continue_as_success_rollback_as_failure_and_a_cut_or_no_data_as_inconclusive(
    served: Server,
) -> None:
    [template] = documents(DEPLOY / "argo" / "analysis-template.yaml")
    [metric] = template["spec"]["metrics"]
    web = metric["provider"]["web"]
    assert web["jsonPath"] == "{$}" and web["url"].endswith("/v1/tests/{{args.test-id}}/verdict")
    path = "/v1/tests/{{args.test-id}}/verdict"
    outcomes = {}
    for test_id in ("healthy", "accuracy-regression", "sustained-medium-risk", "not-started"):
        status, _, result = served.call("GET", path.replace("{{args.test-id}}", test_id))
        assert status == 200  # a non-200 would be an Error measurement
        outcomes[test_id] = (result["action"], argo_outcome(metric, result))
    assert outcomes == {
        "healthy": ("continue", "Successful"),
        "accuracy-regression": ("rollback", "Failed"),
        "sustained-medium-risk": ("reduce_rollout", "Inconclusive"),
        "not-started": (None, "Inconclusive"),
    }


def flagger_call(served: Server, webhook: dict[str, Any], canary: dict[str, Any], test_id: str) -> int:
    """POST what Flagger sends to a webhook (name, namespace, phase, metadata); the status it reads."""
    payload = {
        "name": canary["metadata"]["name"],
        "namespace": canary["metadata"]["namespace"],
        "phase": "Progressing",
        "metadata": {**webhook["metadata"], "test_id": test_id},
    }
    path = "/" + webhook["url"].split("/", 3)[3]
    status, _, body = served.call("POST", path, payload)
    assert body["test_id"] == test_id and body["reason"]
    return status


def test_flagger_webhooks_of_the_canary_answer_as_flagger_reads_them(served: Server) -> None:
    [canary] = documents(DEPLOY / "flagger" / "canary.yaml")
    hooks = {hook["type"]: hook for hook in canary["spec"]["analysis"]["webhooks"]}
    assert set(hooks) == {"confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "rollback"}
    yes = {
        test_id: {kind for kind, hook in hooks.items() if flagger_call(served, hook, canary, test_id) == 200}
        for test_id in ("healthy", "accuracy-regression", "sustained-medium-risk")
    }
    assert yes == {
        "healthy": {"confirm-rollout", "pre-rollout", "rollout", "confirm-promotion"},
        "accuracy-regression": {"rollback"},
        "sustained-medium-risk": set(),  # reduce_rollout: neither go on nor roll back (Flagger counts a failed check)
    }
