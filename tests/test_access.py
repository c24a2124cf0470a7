"""Who may do what, through a real `abguard serve --auth` process: every gRPC method and every HTTP route
for every role, allowed and denied, without credentials and with a wrong one; operator actions
recorded with the identity; the auth file's own errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format

from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.http.app import create_app
from engine.http.openapi import document
from engine.security.identity import new_token, token_hash
from engine.security.roles import GRPC_METHODS, ROLES, holders
from tests.conftest import snapshot
from tests.test_http import ROOT, Server, running, start, wait_ready

TOKENS = {role: new_token() for role in ROLES}  # one identity per role, named after it: "gateway-user", ...
SERVICE = pb.DESCRIPTOR.services_by_name["RiskService"]


def auth_file(folder: Path, **extra: Any) -> Path:
    body: dict[str, Any] = {
        "tokens": [
            {"name": f"{role}-user", "sha256": token_hash(token), "roles": [role]} for role, token in TOKENS.items()
        ]
    }
    body.update(extra)
    path = folder / "auth.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("access")
    with running(folder / "data", "--auth", str(auth_file(folder))) as server:
        yield server


def metadata(who: str) -> list[tuple[str, str]]:
    if who == "nobody":
        return []
    if who == "stranger":
        return [("authorization", f"Bearer {new_token()}")]
    return [("authorization", f"Bearer {TOKENS[who]}")]


def _snapshot(test_id: str) -> pb.Snapshot:
    return json_format.ParseDict(snapshot(test_id), pb.Snapshot())


# each RiskService method called with a request that gets past the gate to the method itself
CALLS: dict[str, Callable[[Any, list[tuple[str, str]], str], Any]] = {
    "Evaluate": lambda stub, md, t: stub.Evaluate(pb.EvaluateRequest(snapshot=_snapshot(t)), metadata=md, timeout=5),
    "EvaluateBatch": lambda stub, md, t: stub.EvaluateBatch(
        pb.EvaluateBatchRequest(snapshots=[_snapshot(t)]), metadata=md, timeout=5
    ),
    "EvaluateStream": lambda stub, md, t: list(
        stub.EvaluateStream(iter([pb.EvaluateBatchRequest(snapshots=[_snapshot(t)])]), metadata=md, timeout=5)
    ),
    "GetPolicy": lambda stub, md, t: stub.GetPolicy(pb.GetPolicyRequest(), metadata=md, timeout=5),
    "ReloadPolicy": lambda stub, md, t: stub.ReloadPolicy(
        pb.ReloadPolicyRequest(reason="test"), metadata=md, timeout=30
    ),
    "GetTest": lambda stub, md, t: stub.GetTest(pb.GetTestRequest(test_id="healthy"), metadata=md, timeout=5),
    "RestartTest": lambda stub, md, t: stub.RestartTest(
        pb.RestartTestRequest(test_id="healthy", reason="access test"), metadata=md, timeout=5
    ),
    "ListDecisions": lambda stub, md, t: stub.ListDecisions(
        pb.ListDecisionsRequest(test_id="healthy"), metadata=md, timeout=5
    ),
    "WatchDecisions": lambda stub, md, t: list(
        stub.WatchDecisions(pb.WatchDecisionsRequest(), metadata=md, timeout=0.5)
    ),
    "GetRollback": lambda stub, md, t: stub.GetRollback(
        pb.GetRollbackRequest(test_id="healthy"), metadata=md, timeout=5
    ),
    "ListRollbacks": lambda stub, md, t: stub.ListRollbacks(pb.ListRollbacksRequest(), metadata=md, timeout=5),
    "ReportRollbackStep": lambda stub, md, t: stub.ReportRollbackStep(
        pb.ReportRollbackStepRequest(test_id="healthy", rollback_id="r-none", step="traffic_cutoff", outcome="done"),
        metadata=md,
        timeout=5,
    ),
    "RollbackTest": lambda stub, md, t: stub.RollbackTest(
        pb.RollbackTestRequest(test_id="nobody-knows", reason="access test", requested_by="pager"),
        metadata=md,
        timeout=5,
    ),
}


def grpc_code(server: Server, method: str, who: str) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(server.grpc) as channel:
        try:
            CALLS[method](rpc.RiskServiceStub(channel), metadata(who), f"{who}-{method}")
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_every_method_of_the_service_has_a_permission_and_a_call_here() -> None:
    names = {method.name for method in SERVICE.methods}
    assert names == set(GRPC_METHODS) == set(CALLS)


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("method", sorted(CALLS))
def test_grpc_method_by_role(served: Server, method: str, role: str) -> None:
    code, details = grpc_code(served, method, role)
    if role in holders(GRPC_METHODS[method]):
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), details
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED
        needed = holders(GRPC_METHODS[method])
        assert details.startswith(f"{method} needs ") and all(name in details for name in needed), details
        assert f"{role}-user holds {role}" in details


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("who", ["nobody", "stranger"])
def test_grpc_method_without_a_known_credential_is_unauthenticated(served: Server, method: str, who: str) -> None:
    code, details = grpc_code(served, method, who)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert ("needs a bearer token" if who == "nobody" else "not one this server knows") in details


def test_health_and_reflection_stay_open(served: Server) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served.grpc) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- HTTP -------------------------------------------------------------------------------------
def http(server: Server, method: str, path: str, who: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
    request = urllib.request.Request(f"http://{server.http}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for key, value in metadata(who):
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, headers = answer.status, dict(answer.headers)
            text = answer.read() if "event-stream" not in headers.get("content-type", "") else b""
    except urllib.error.HTTPError as error:
        status, headers, text = error.code, dict(error.headers), error.read()
    kind = headers.get("content-type", "")
    return status, headers, json.loads(text) if "json" in kind and text else text


ROUTES: dict[tuple[str, str], tuple[str, Any, set[str]]] = {
    # (method, route) -> (a path to call, a body, the roles allowed); "*" = open to anyone
    ("POST", "/v1/evaluate"): ("/v1/evaluate", snapshot("http-eval"), {"gateway"}),
    ("GET", "/v1/whoami"): ("/v1/whoami", None, set(ROLES)),
    ("POST", "/v1/session"): ("/v1/session", None, set(ROLES)),
    ("DELETE", "/v1/session"): ("/v1/session", None, {"*"}),
    ("GET", "/v1/tests"): ("/v1/tests", None, {"gateway", "operator", "auditor", "viewer"}),
    ("GET", "/v1/policy"): ("/v1/policy", None, set(ROLES)),
    ("POST", "/v1/policy/reload"): ("/v1/policy/reload", {"reason": "test"}, {"operator"}),
    ("GET", "/v1/tests/{test_id}/decisions"): ("/v1/tests/healthy/decisions", None, set(ROLES)),
    ("GET", "/v1/tests/{test_id}/audit"): ("/v1/tests/healthy/audit", None, {"auditor"}),
    ("GET", "/v1/tests/{test_id}/rollbacks"): ("/v1/tests/healthy/rollbacks", None, set(ROLES)),
    ("POST", "/v1/tests/{test_id}/rollbacks/{rollback_id}/steps"): (
        "/v1/tests/healthy/rollbacks/r-none/steps",
        {"step": "traffic_cutoff", "outcome": "done"},
        {"gateway"},
    ),
    ("POST", "/v1/tests/{test_id}/rollback"): ("/v1/tests/nobody-knows/rollback", {"reason": "x"}, {"operator"}),
    ("POST", "/v1/tests/{test_id}/restart"): ("/v1/tests/healthy/restart", {"reason": "x"}, {"operator"}),
    ("GET", "/v1/tests/{test_id}/verdict"): ("/v1/tests/healthy/verdict", None, set(ROLES)),
    ("GET", "/v1/tests/{test_id}/dashboard"): ("/v1/tests/healthy/dashboard", None, set(ROLES)),
    ("GET", "/v1/tests/{test_id}"): ("/v1/tests/healthy", None, set(ROLES)),
    ("POST", "/v1/flagger/{hook}"): ("/v1/flagger/confirm-promotion", {"metadata": {"test_id": "healthy"}}, set(ROLES)),
    ("GET", "/v1/watch"): ("/v1/watch", None, set(ROLES)),
    ("GET", "/healthz"): ("/healthz", None, {"*"}),
    ("GET", "/readyz"): ("/readyz", None, {"*"}),
    ("GET", "/metrics"): ("/metrics", None, {"*"}),
    ("GET", "/openapi.json"): ("/openapi.json", None, {"*"}),
    ("GET", "/"): ("/", None, {"*"}),
    ("GET", "/static/{name}"): ("/static/dashboard.js", None, {"*"}),
}


def test_every_route_of_the_app_is_in_the_table_here(tmp_path: Path) -> None:
    from engine.service import Guard
    from engine.store.sqlite import SqliteLog
    from tests.test_service import POLICY

    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    try:
        routes: list[Any] = list(create_app(guard).routes)
        served = {(m, route.path.replace(":path", "")) for route in routes for m in route.methods if m != "HEAD"}
    finally:
        guard.close()
    assert served == set(ROUTES)


@pytest.mark.parametrize("who", [*sorted(ROLES), "nobody", "stranger"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_http_route_by_role(served: Server, route: tuple[str, str], who: str) -> None:
    method, pattern = route
    path, body, allowed = ROUTES[route]
    status, headers, answer = http(served, method, path, who, body)
    documented = document()["paths"][pattern][method.lower()]["responses"]
    assert str(status) in documented, f"{method} {pattern} answered {status}, documented {sorted(documented)}"
    if "*" in allowed or who in allowed:
        assert status not in (401, 403), answer
    elif who in ("nobody", "stranger"):
        assert status == 401, answer
        assert headers.get("www-authenticate") == 'Bearer realm="abguard"'
        assert answer["code"] == "UNAUTHENTICATED"
    else:
        assert status == 403, answer
        assert answer["code"] == "PERMISSION_DENIED" and f"{who}-user holds {who}" in answer["detail"]
        assert answer["detail"].startswith(f"{method} {path} needs ")  # the test named, not the route pattern


# --- what operators do is recorded with who did it -------------------------------------------
def test_a_manual_rollback_and_a_restart_are_recorded_with_the_identity(tmp_path: Path) -> None:
    process, started = start(tmp_path / "data", "--auth", str(auth_file(tmp_path)))
    server = Server(started["http"], started["listen"], process)
    try:
        wait_ready(server)
        for row in [snapshot("audited", step) for step in range(3)]:
            assert http(server, "POST", "/v1/evaluate", "gateway", row)[0] == 200
        with grpc.insecure_channel(server.grpc) as channel:
            stub = rpc.RiskServiceStub(channel)
            request = pb.RollbackTestRequest(test_id="audited", reason="pager fired", requested_by="on-call")
            record = stub.RollbackTest(request, metadata=metadata("operator"), timeout=10)
            assert record.requested_by == "operator-user (for on-call)"
            restart = pb.RestartTestRequest(test_id="audited", reason="fixed")
            stub.RestartTest(restart, metadata=metadata("operator"), timeout=10)
        status, _, answer = http(server, "POST", "/v1/tests/audited/rollback", "operator", {"reason": "again"})
        assert status == 200 and answer["requested_by"] == "operator-user"
        _, _, listing = http(server, "GET", "/v1/tests/audited/rollbacks", "viewer")
        assert {r["requested_by"] for r in listing["rollbacks"]} == {"operator-user (for on-call)", "operator-user"}
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    actions = [json.loads(line) for line in out.splitlines() if '"operator_action"' in line]
    assert [(a["method"], a["identity"]) for a in actions] == [
        ("RollbackTest", "operator-user"), ("RestartTest", "operator-user"), ("POST rollback", "operator-user"),
    ]  # fmt: skip
    assert actions[1]["reason"] == "fixed"


def test_the_audit_trail_holds_snapshots_and_the_hash_chain(served: Server) -> None:
    assert http(served, "POST", "/v1/evaluate", "gateway", snapshot("trail", 0))[0] == 200
    assert http(served, "POST", "/v1/evaluate", "gateway", snapshot("trail", 1))[0] == 200
    status, _, answer = http(served, "GET", "/v1/tests/trail/audit", "auditor")
    assert status == 200
    newer, older = answer["records"]
    assert newer["prev_hash"] == older["hash"] and newer["seq"] > older["seq"]
    assert newer["snapshot"]["timestamp"] == snapshot("trail", 1)["timestamp"]
    assert newer["decision"]["timestamp"] == newer["snapshot"]["timestamp"]


# --- the auth file ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"tokens": [{"name": "a", "sha256": "00" * 32, "roles": ["admin"]}]}, "tokens[0].roles[0]"),
        ({"tokens": [{"name": "a", "sha256": "short", "roles": ["viewer"]}]}, "tokens[0].sha256"),
        ({"tokens": [{"name": "a", "sha256": "00" * 32}]}, "'roles' is a required property"),
        ({"tokens": [{"name": "a", "sha256": "00" * 32, "roles": ["viewer"], "extra": 1}]}, "tokens[0]"),
        ({"clients": [{"common_name": "x", "uri": "y", "roles": ["viewer"]}]}, "clients[0]"),
        ({"jwt": {"jwks_file": "missing.json", "issuer": "i", "audience": "a"}}, "jwt.jwks_file"),
        ({"open": ["everything"]}, "open[0]"),
        ({"limits": {"requests_per_second": -1}}, "limits.requests_per_second"),
        ({}, "names no tokens, jwt or clients"),
        ("tokens: [unclosed", "not YAML"),
    ],
)
def test_a_bad_auth_file_stops_serve_naming_the_field(tmp_path: Path, content: Any, named: str) -> None:
    path = tmp_path / "auth.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    command = [sys.executable, "-m", "engine", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
               "--policies", str(ROOT / "policies"), "--auth", str(path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("abguard serve: --auth: ") and named in line, line


def test_auth_token_prints_a_token_whose_entry_the_file_accepts(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "engine", "auth", "token", "--name", "gw-eu", "--role", "gateway"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    token = made.stdout.strip()
    entry = json.loads(made.stderr.strip().splitlines()[-1].lstrip(" -"))
    assert entry == {"name": "gw-eu", "sha256": token_hash(token), "roles": ["gateway"]}
    assert token not in made.stderr
    (tmp_path / "auth.yaml").write_text(yaml.safe_dump({"tokens": [entry]}))
    checked = subprocess.run(
        [sys.executable, "-m", "engine", "auth", "check", str(tmp_path / "auth.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0 and '"tokens": 1' in checked.stdout


# --- mTLS: the client certificate is the identity ---------------------------------------------------
def test_client_certificates_map_to_roles_on_grpc_and_https(tmp_path: Path) -> None:
    """serve --tls-client-ca --auth: a certificate the file maps holds its roles on both ports, one it
    does not map is UNAUTHENTICATED, and a bearer token on the same connection decides instead."""
    import ssl

    from engine.security.tls import channel_credentials
    from tests.support.certs import Authority
    from tests.test_tls import https_get

    authority = Authority(tmp_path / "ca")
    server, gateway, ops, stranger = (authority.server(), authority.client("gateway-1"), authority.client("ops-1"),
                                      authority.client("stranger-1"))  # fmt: skip
    clients = [{"common_name": "gateway-1", "roles": ["gateway"]}, {"common_name": "ops-1", "roles": ["operator"]}]
    process, started = start(
        tmp_path / "data", "--auth", str(auth_file(tmp_path, clients=clients)),
        "--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", str(authority.cert),
    )  # fmt: skip
    web = int(started["http"].rpartition(":")[2])
    try:

        def call(pair: Any, method: str, token: str | None = None) -> tuple[grpc.StatusCode, str]:
            credentials = channel_credentials(authority.cert, pair.cert, pair.key)
            with grpc.secure_channel(started["listen"], credentials) as channel:
                md = [("authorization", f"Bearer {token}")] if token else []
                try:
                    CALLS[method](rpc.RiskServiceStub(channel), md, f"mtls-{method}")
                except grpc.RpcError as error:
                    return error.code(), error.details() or ""
            return grpc.StatusCode.OK, ""

        deadline = time.monotonic() + 30
        while call(gateway, "Evaluate")[0] == grpc.StatusCode.UNAVAILABLE:  # the first answer once it is ready
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert call(gateway, "Evaluate")[0] == grpc.StatusCode.OK
        code, details = call(gateway, "RestartTest")
        assert code == grpc.StatusCode.PERMISSION_DENIED and "gateway-1 holds gateway" in details
        assert call(ops, "RestartTest")[0] == grpc.StatusCode.NOT_FOUND  # allowed: the test is unknown
        code, details = call(stranger, "GetPolicy")
        assert code == grpc.StatusCode.UNAUTHENTICATED and "'stranger-1'" in details
        assert call(stranger, "GetPolicy", TOKENS["viewer"])[0] == grpc.StatusCode.OK  # the token decides
        status, body = https_get(web, "/v1/whoami", authority.cert, ops)
        assert (status, body["identity"], body["via"], body["roles"]) == (200, "ops-1", "mtls", ["operator"])
        assert https_get(web, "/v1/whoami", authority.cert, stranger)[0] == 401
        with pytest.raises((ssl.SSLError, ConnectionError)):  # no certificate: no TLS session at all
            https_get(web, "/healthz", authority.cert)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err


def test_a_changed_auth_file_is_used_within_a_second_and_a_broken_one_is_not(tmp_path: Path) -> None:
    """Revoking is removing the line: no restart. A file that cannot be used keeps the last good one."""
    newcomer = new_token()
    path = auth_file(tmp_path)
    process, started = start(tmp_path / "data", "--auth", str(path))
    server = Server(started["http"], started["listen"], process)
    try:
        wait_ready(server)
        assert http(server, "GET", "/v1/whoami", "viewer")[0] == 200
        body = yaml.safe_load(path.read_text())
        body["tokens"] = [t for t in body["tokens"] if t["name"] != "viewer-user"]  # revoked
        body["tokens"].append({"name": "newcomer", "sha256": token_hash(newcomer), "roles": ["auditor"]})
        replacement = tmp_path / "auth.yaml.new"
        replacement.write_text(yaml.safe_dump(body))
        replacement.replace(path)
        deadline = time.monotonic() + 10
        while http(server, "GET", "/v1/whoami", "viewer")[0] != 401:
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.1)
        request = urllib.request.Request(
            f"http://{server.http}/v1/whoami", headers={"Authorization": f"Bearer {newcomer}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["identity"] == "newcomer"
        path.write_text("tokens: [{name: x, roles: [root]}]\n")  # broken: the last good file stays in force
        time.sleep(1.5)
        assert http(server, "GET", "/v1/whoami", "operator")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    reloaded = [e for e in events if e["event"] == "auth_reloaded"]
    failed = [e for e in events if e["event"] == "auth_reload_failed"]
    assert len(reloaded) == 1 and reloaded[0]["tokens"] == 4
    assert len(failed) == 1 and "tokens[0]" in failed[0]["why"]
