"""HTTP/JSON against the running server (`abguard serve --http`): every endpoint, errors as
problem+json with the status of the same gRPC code, SSE, /metrics, and the OpenAPI document."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parent.parent


def scenario(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / f"{name}.jsonl").read_text().splitlines()]


@dataclass
class Server:
    http: str
    grpc: str
    process: subprocess.Popen[str]

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"http://{self.http}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, headers, text = answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            status, headers, text = error.code, dict(error.headers), error.read()
        kind = headers.get("content-type", "")
        return status, headers, json.loads(text) if "json" in kind else text.decode()


def start(data: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    command = [
        str(Path(sys.executable).parent / "abguard"), "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--data-dir", str(data), "--policies", str(ROOT / "policies"), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())
    assert started["event"] == "serving", started
    return process, started


@contextmanager
def running(data: Path, *extra: str) -> Iterator[Server]:
    """`abguard serve --http` on free ports, ready; stopped with SIGTERM, which must exit 0."""
    process, started = start(data, *extra)
    server = Server(started["http"], started["listen"], process)
    try:
        wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


def evaluate_grpc(server: Server, rows: list[dict[str, Any]]) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = rpc.RiskServiceStub(channel)
        for row in rows:
            stub.Evaluate(pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot())), timeout=10)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 30
    while server.call("GET", "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server; healthy and accuracy_regression streamed over HTTP, error_storm over gRPC."""
    with running(tmp_path_factory.mktemp("http") / "data") as made:
        for name in ("healthy", "accuracy_regression"):
            for row in scenario(name):
                status, _, _ = made.call("POST", "/v1/evaluate", row)
                assert status == 200
        evaluate_grpc(made, scenario("error_storm"))
        yield made


# --- the operations -------------------------------------------------------------------------------
def test_evaluate_answers_the_decision_and_a_resent_snapshot_the_same_one(server: Server) -> None:
    row = scenario("healthy")[3]
    status, headers, decision = server.call("POST", "/v1/evaluate", row)
    assert status == 200 and headers["content-type"] == "application/json"
    assert decision["test_id"] == "healthy" and decision["timestamp"] == row["timestamp"]
    assert server.call("POST", "/v1/evaluate", row)[2] == decision


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"test_id": "x"}, 400, "INVALID_ARGUMENT", "timestamp"),
        ({**scenario("healthy")[0], "challenger": {"requests": -1}}, 400, "INVALID_ARGUMENT", "challenger.requests"),
        (
            {**scenario("healthy")[0], "timestamp": "2026-11-24T08:00:00Z"},
            409,
            "FAILED_PRECONDITION",
            "snapshot.timestamp",
        ),
        ([1, 2], 400, "INVALID_ARGUMENT", "body"),
    ],
    ids=["missing-fields", "negative-count", "out-of-order", "not-an-object"],
)
def test_bad_snapshots_are_problems_naming_the_field(
    server: Server, body: Any, status: int, code: str, field: str
) -> None:
    got, headers, problem = server.call("POST", "/v1/evaluate", body)
    assert (got, headers["content-type"]) == (status, "application/problem+json")
    assert problem["status"] == status and problem["code"] == code
    assert field in [error["field"] for error in problem["errors"]], problem


def test_undecodable_and_oversized_bodies_are_refused(server: Server) -> None:
    status, _, problem = server.call("POST", "/v1/evaluate", raw=b"{not json")
    assert (status, problem["errors"][0]["field"]) == (400, "body")
    status, _, problem = server.call("POST", "/v1/evaluate", raw=b" " * (1 << 20 + 1))
    assert (status, problem["code"]) == (413, "CONTENT_TOO_LARGE")


def test_tests_test_and_decisions_with_pages(server: Server) -> None:
    status, _, listing = server.call("GET", "/v1/tests")
    assert status == 200
    statuses = {t["test_id"]: t["test_status"] for t in listing["tests"]}
    assert statuses["healthy"] == "running" and statuses["accuracy-regression"] == "rollback_in_progress"
    status, _, test = server.call("GET", "/v1/tests/accuracy-regression")
    assert (status, test["target_rollout_percent"], test["decisions"]) == (200, 0.0, 80)
    assert test["policy"]["digest"].startswith("sha256:")
    _, _, first = server.call("GET", "/v1/tests/accuracy-regression/decisions?page_size=30")
    assert len(first["decisions"]) == 30 and first["next_page_token"]
    _, _, second = server.call(
        "GET", f"/v1/tests/accuracy-regression/decisions?page_size=30&page_token={first['next_page_token']}"
    )
    times = [d["timestamp"] for d in first["decisions"] + second["decisions"]]
    assert times == sorted(times, reverse=True) and len(set(times)) == 60
    assert server.call("GET", "/v1/tests/nope")[0] == 404
    assert server.call("GET", "/v1/tests/healthy/decisions?page_size=abc")[2]["errors"][0]["field"] == "page_size"
    assert server.call("GET", "/v1/tests/healthy/decisions?page_token=zzz")[0] == 400


def test_rollbacks_manual_rollback_step_reports_and_restart(server: Server) -> None:
    status, _, listing = server.call("GET", "/v1/tests/accuracy-regression/rollbacks")
    [record] = listing["rollbacks"]
    assert status == 200 and record["trigger"] == "automatic_critical_risk"
    path = f"/v1/tests/accuracy-regression/rollbacks/{record['rollback_id']}/steps"
    status, _, moved = server.call("POST", path, {"step": "traffic_cutoff", "outcome": "done", "detail": "gw"})
    assert status == 200 and next(s for s in moved["steps"] if s["name"] == "traffic_cutoff")["state"] == "done"
    assert server.call("POST", path, {"step": "feature_flags", "outcome": "done"})[0] == 400
    assert server.call("POST", path, {"step": "traffic_cutoff"})[2]["errors"][0]["field"] == "outcome"
    status, _, manual = server.call("POST", "/v1/tests/error-storm/rollback", {"reason": "r", "requested_by": "ops"})
    assert status == 200 and manual["test_id"] == "error-storm"
    assert server.call("POST", "/v1/tests/healthy/rollback", {"reason": "r"})[0] == 400
    assert server.call("POST", "/v1/tests/nope/rollback", {"reason": "r", "requested_by": "ops"})[0] == 404
    status, _, restarted = server.call("POST", "/v1/tests/error-storm/restart", {"reason": "fixed"})
    assert (status, restarted["test_status"]) == (200, "running")


def test_unknown_paths_and_methods_are_problems(server: Server) -> None:
    assert server.call("GET", "/v2/nothing")[2]["status"] == 404
    status, headers, body = server.call("DELETE", "/v1/evaluate")
    assert (status, headers["content-type"], body["title"]) == (405, "application/problem+json", "Method Not Allowed")
    assert headers["allow"] == "POST"
    status, headers, _ = server.call("PUT", "/v1/session")
    assert status == 405 and set(headers["allow"].split(", ")) == {"POST", "DELETE"}


# --- the controllers ------------------------------------------------------------------------------
def test_argo_verdict_is_200_for_every_state_with_the_action_its_conditions_read(server: Server) -> None:
    for test_id, action, test_status in [
        ("healthy", "continue", "running"),
        ("accuracy-regression", "rollback", "rollback_in_progress"),
        ("never-seen", None, "no_data"),
    ]:
        status, _, verdict = server.call("GET", f"/v1/tests/{test_id}/verdict")
        assert status == 200
        assert (verdict["action"], verdict["test_status"]) == (action, test_status)
        assert set(verdict) >= {"action", "risk_score", "risk_level", "reason", "test_status", "policy"}
        assert verdict["policy"]["digest"].startswith("sha256:")


@pytest.mark.parametrize(
    ("hook", "test", "status"),
    [
        ("confirm-rollout", "healthy", 200),
        ("pre-rollout", "healthy", 200),
        ("rollout", "healthy", 200),
        ("confirm-promotion", "healthy", 200),
        ("rollback", "healthy", 409),
        ("confirm-rollout", "accuracy-regression", 409),
        ("rollout", "accuracy-regression", 409),
        ("confirm-promotion", "accuracy-regression", 409),
        ("rollback", "accuracy-regression", 200),
        ("pre-rollout", "brand-new", 200),
        ("rollout", "brand-new", 409),
        ("rollback", "brand-new", 409),
    ],
)
def test_flagger_reads_200_as_yes_and_409_as_no(server: Server, hook: str, test: str, status: int) -> None:
    payload = {"name": "ranker", "namespace": "ml", "phase": "Progressing", "metadata": {"test_id": test}}
    got, _, body = server.call("POST", f"/v1/flagger/{hook}", payload)
    assert got == status, body
    assert (body["test_id"], body["hook"], body["phase"]) == (test, hook, "Progressing") and body["reason"]


def test_flagger_falls_back_to_namespace_and_name_and_refuses_bad_payloads(server: Server) -> None:
    got, _, body = server.call("POST", "/v1/flagger/rollout", {"name": "ranker", "namespace": "ml"})
    assert (got, body["test_id"]) == (409, "ml/ranker")
    assert server.call("POST", "/v1/flagger/rollout", {"namespace": "ml"})[2]["errors"][0]["field"] == "name"
    bad_id = {"name": "a", "namespace": "b", "metadata": {"test_id": 5}}
    assert server.call("POST", "/v1/flagger/rollout", bad_id)[2]["errors"][0]["field"] == "metadata.test_id"
    assert server.call("POST", "/v1/flagger/launch", {"name": "x", "namespace": "y"})[2]["errors"][0]["field"] == "hook"


# --- watching, health, metrics, documents -----------------------------------------------------------
def test_watch_streams_new_decisions_as_server_sent_events(server: Server) -> None:
    got: list[dict[str, Any]] = []
    opened = threading.Event()

    def listen() -> None:
        request = urllib.request.Request(f"http://{server.http}/v1/watch?test_id=sse-test")
        with urllib.request.urlopen(request, timeout=10) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in stream:
                if line.startswith(b"data: "):
                    got.append(json.loads(line[6:]))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(10)
    time.sleep(0.3)  # the watch is registered once the response has started
    row = {**scenario("healthy")[0], "test_id": "sse-test"}
    decision = server.call("POST", "/v1/evaluate", row)[2]
    listener.join(10)
    assert [d["decision_id"] for d in got] == [decision["decision_id"]]
    assert server.call("GET", "/v1/watch?action=bogus")[0] == 400


def test_health_and_readiness(server: Server) -> None:
    assert server.call("GET", "/healthz")[:1] == (200,)
    assert server.call("GET", "/readyz")[2] == {"status": "ready"}


def test_metrics_name_decisions_rollbacks_latency_tests_policy_and_grpc_calls(server: Server) -> None:
    with grpc.insecure_channel(server.grpc) as channel, pytest.raises(grpc.RpcError):
        rpc.RiskServiceStub(channel).Evaluate(pb.EvaluateRequest(), timeout=10)  # INVALID_ARGUMENT: no snapshot
    status, headers, text = server.call("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert any(
        line.startswith('abguard_decisions_total{action="rollback",enforced="true",triggered_by="rolled_back_test"}')
        for line in lines
    )
    assert any(line.startswith('abguard_rollbacks_total{trigger="automatic_critical_risk"}') for line in lines)
    assert any(
        line.startswith('abguard_evaluate_duration_seconds_bucket{le="0.00025",transport="http"}') for line in lines
    )
    assert any(line.startswith('abguard_evaluate_duration_seconds_count{transport="grpc"} 60.0') for line in lines)
    assert 'abguard_risk_score{test_id="healthy"} 0.0' in lines
    assert any(line.startswith('abguard_target_rollout_ratio{test_id="healthy"} 0.1') for line in lines)
    assert 'abguard_condition_status{condition="accuracy",status="ok",test_id="healthy"} 1.0' in lines
    assert any(line.startswith('abguard_policy_info{digest="sha256:') for line in lines)
    assert any(line.startswith('grpc_server_handled_total{grpc_code="OK",grpc_method="Evaluate"') for line in lines)
    assert any(
        line.startswith('grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="Evaluate"')
        for line in lines
    )
    assert "decision_id" not in text and "reason" not in text.replace("# HELP", "")


def test_openapi_is_valid_and_names_every_route(server: Server) -> None:
    from openapi_spec_validator import validate

    status, _, document = server.call("GET", "/openapi.json")
    assert status == 200
    validate(document)
    served = {route.path.replace(":path", "") for route in _routes()}
    assert served == set(document["paths"])


def _routes() -> list[Any]:
    import tempfile

    from engine.http.app import create_app
    from engine.policy import load_effective
    from engine.service import Guard
    from engine.store.sqlite import SqliteLog

    with tempfile.TemporaryDirectory() as folder:
        guard = Guard(load_effective([str(ROOT / "policies")]), SqliteLog.in_dir(folder))
        routes = list(create_app(guard).routes)
        guard.close()
    return routes


def test_the_dashboard_document_is_the_spec_s_risk_dashboard(server: Server) -> None:
    status, _, body = server.call("GET", "/v1/tests/accuracy-regression/dashboard")
    dash = body["risk_dashboard"]
    assert status == 200
    assert set(dash) >= {"overall_risk_level", "risk_score", "active_conditions", "rolling_metrics", "test_health"}
    assert [c["name"] for c in dash["active_conditions"]] == ["accuracy"]
    assert set(dash["rolling_metrics"]) == {"accuracy_trend", "latency_trend", "throughput_trend", "cache_performance"}
    health = dash["test_health"]
    assert health["statistical_significance"] is True and health["sample_size_progress"] == 1.0
    comparison = health["performance_comparison"]
    assert comparison["champion"]["accuracy"] > comparison["challenger"]["accuracy"]
    assert len(dash["series"]) == 80 and dash["series"][-1]["action"] == "rollback"
    assert body["rollbacks"][0]["trigger"] == "automatic_critical_risk"
    assert server.call("GET", "/v1/tests/nope/dashboard")[0] == 404


def test_the_page_and_its_files_are_served(server: Server) -> None:
    status, headers, page = server.call("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and "/static/dashboard.js" in page
    assert server.call("GET", "/static/dashboard.js")[0] == 200
    assert server.call("GET", "/static/dashboard.css")[0] == 200
    assert server.call("GET", "/static/..%2Fapp.py")[0] == 404
    assert server.call("GET", "/static/nothing.js")[0] == 404
