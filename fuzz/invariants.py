"""What fuzzing checks, shared by tests/test_fuzz.py (hypothesis, `make test`) and the atheris targets
(`make fuzz`): a real service on 127.0.0.1 (gRPC and HTTP over one Guard) and the invariants of issue 12.

Invariants: a call ends OK or with a domain code (never UNKNOWN or INTERNAL, never HTTP 500); an error
caused by the input names the field to blame; the server still answers health and a valid snapshot
afterwards; the policy loader raises PolicyError with located diagnostics and nothing else; the `when`
parser raises ExprError with one of its codes and nothing else. A violation raises `Violated` (an
AssertionError), so pytest reports it and libFuzzer saves the input that caused it.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.http.app import create_app
from engine.http.server import HttpServer
from engine.policy import Policy, PolicyError, load_effective
from engine.policy.expr import Expr, ExprError, parse, to_source
from engine.service import Guard
from engine.store.sqlite import SqliteLog

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
SCENARIOS = ROOT / "scenarios"
EVALUATE = "/abguard.v1.RiskService/Evaluate"
EVALUATE_BATCH = "/abguard.v1.RiskService/EvaluateBatch"
# the codes a caller may see from Evaluate: its own fault, ordering, a missing test, limits, retryable trouble
ALLOWED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
ALLOWED_NAMES = frozenset(code.name for code in ALLOWED)
NAMED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})  # a field is to blame
HTTP_ALLOWED = frozenset({400, 404, 409, 413, 429, 503})
EXPR_CODES = frozenset(
    {
        "expr-syntax",
        "expr-too-long",
        "expr-too-deep",
        "expr-not-boolean",
        "expr-forbidden",
        "expr-no-fact",
        "expr-zero",
        "expr-not-finite",
        "expr-nonlinear",
        "expr-unknown-fact",
        "expr-unknown-threshold",
    }
)
TIMEOUT = 10.0  # seconds any one call may take


class Violated(AssertionError):
    """An invariant does not hold: the input that got here is a finding."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Violated(message)


def seeds() -> list[dict[str, Any]]:
    """Valid snapshots: the first rows of every bundled scenario."""
    rows = []
    for path in sorted(SCENARIOS.glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()[:3]]
    return rows


# --- gRPC -------------------------------------------------------------------------------------
def violations(error: grpc.RpcError) -> list[str]:
    """The fields a google.rpc.BadRequest detail of the error names."""
    status = rpc_status.from_call(error)  # an RpcError raised by a call is also its grpc.Call
    fields: list[str] = []
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [violation.field for violation in bad.field_violations]
    return fields


def check_rpc_error(error: grpc.RpcError) -> grpc.StatusCode:
    """A failed call ended with a domain code, and one caused by the input names its field."""
    code = error.code()  # the call's error is also a grpc.Call
    details = error.details() or ""
    expect(code in ALLOWED, f"status {code}: {details[:500]}")
    if code in NAMED:
        fields = violations(error)
        expect(bool(fields) and all(fields), f"{code.name} names no field: {details[:500]}")
        leaf = fields[0].rsplit(".", 1)[-1].split("[", 1)[0]
        expect(leaf in details, f"{code.name}: the message does not name {fields[0]!r}: {details[:500]}")
    return code


def call_raw(channel: grpc.Channel, method: str, body: bytes) -> bytes | grpc.StatusCode:
    """Send bytes as the request: the reply's bytes, or the (checked) status code of the failure."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        reply: bytes = call(body, timeout=TIMEOUT)
    except grpc.RpcError as error:
        return check_rpc_error(error)
    return reply


def check_evaluate_reply(reply: bytes) -> pb.Decision:
    response = pb.EvaluateResponse.FromString(reply)
    decision = response.decision
    expect(bool(decision.decision_id) and decision.action != pb.ACTION_UNSPECIFIED, f"not a decision: {decision}")
    return decision


def check_batch_reply(reply: bytes, count: int | None) -> pb.EvaluateBatchResponse:
    """One result per snapshot, each a decision or its own domain error naming `snapshots[i]`."""
    response = pb.EvaluateBatchResponse.FromString(reply)
    expect(count is None or len(response.results) == count, f"{len(response.results)} results for {count}")
    for index, result in enumerate(response.results):
        if result.HasField("decision"):
            expect(bool(result.decision.decision_id), f"results[{index}]: a decision without an id")
            continue
        error = result.error
        expect(error.code in ALLOWED_NAMES, f"results[{index}]: {error.code}: {error.message[:300]}")
        if error.code in {code.name for code in NAMED}:
            fields = [violation.field for violation in error.violations]
            expect(
                bool(fields) and all(f.startswith(f"snapshots[{index}].") for f in fields),
                f"results[{index}]: violations {fields} do not name snapshots[{index}]: {error.message[:300]}",
            )
    return response


def request_of(row: dict[str, Any]) -> pb.EvaluateRequest:
    return pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))


# --- HTTP -------------------------------------------------------------------------------------
def check_http(status: int, kind: str, body: bytes) -> Any:
    """POST /v1/evaluate: a decision, or problem+json with a domain status; a 400 names its fields."""
    expect(status == 200 or status in HTTP_ALLOWED, f"HTTP {status}: {body[:500]!r}")
    document = orjson.loads(body)
    if status == 200:
        expect(kind.startswith("application/json"), f"200 as {kind}")
        expect(isinstance(document, dict) and bool(document.get("decision_id")), f"not a decision: {body[:300]!r}")
        return document
    expect(kind.startswith("application/problem+json"), f"HTTP {status} as {kind}")
    expect(document.get("status") == status and bool(document.get("code")), f"not a problem: {body[:300]!r}")
    if status in (400, 409):
        errors = document.get("errors") or []
        expect(bool(errors) and all(e.get("field") for e in errors), f"HTTP {status} names no field: {body[:300]!r}")
    return document


# --- the service ------------------------------------------------------------------------------
class Service:
    """The real servers over one Guard and a SQLite log in a temporary data dir, on 127.0.0.1 ports."""

    def __init__(self, data_dir: Path | None = None, policy: Policy | None = None) -> None:
        self._own = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="abguard-fuzz-"))
        self.policy = policy or load_effective([str(POLICIES)])
        self.events: list[dict[str, Any]] = []
        self.guard = Guard(self.policy, SqliteLog.in_dir(self.data_dir), on_event=self.events.append)
        self.server, port, _ = create_server(self.guard, "127.0.0.1:0", 4, self.events.append)
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.http = HttpServer(create_app(self.guard, log=self.events.append), "127.0.0.1:0")
        self.http.start()
        self._connection: http.client.HTTPConnection | None = None
        self._probe = 0

    def post(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        """POST over one kept-alive connection (a fresh one if the server closed it)."""
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.http.host, self.http.port, timeout=TIMEOUT)
            try:
                self._connection.request("POST", path, body, {"Content-Type": "application/json"})
                answer = self._connection.getresponse()
                return answer.status, answer.getheader("content-type") or "", answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> int:
        connection = http.client.HTTPConnection(self.http.host, self.http.port, timeout=TIMEOUT)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            answer.read()
            return answer.status
        finally:
            connection.close()

    def alive(self) -> None:
        """Health says SERVING, and a fresh valid snapshot is decided over gRPC and over HTTP."""
        health = health_pb2_grpc.HealthStub(self.channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status
        expect(status == health_pb2.HealthCheckResponse.SERVING, f"health says {status}")
        self._probe += 1
        row = {**seeds()[0], "test_id": f"fuzz-probe-{self._probe}"}
        reply = call_raw(self.channel, EVALUATE, request_of(row).SerializeToString())
        expect(isinstance(reply, bytes), f"a valid snapshot got {reply!r}")
        assert isinstance(reply, bytes)
        check_evaluate_reply(reply)
        expect(self.get("/healthz") == 200, "/healthz does not answer 200")
        status_code, kind, body = self.post("/v1/evaluate", orjson.dumps({**row, "test_id": f"{row['test_id']}-http"}))
        expect(status_code == 200, f"a valid snapshot over HTTP got {status_code}: {body[:300]!r}")
        check_http(status_code, kind, body)
        internal = [e for e in self.events if e.get("event") == "internal_error"]
        expect(not internal, f"the service logged a bug of ours: {internal[:3]}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self.channel.close()
        self.http.stop(5)
        self.server.stop(2).wait()
        self.guard.close()
        if self._own:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@contextlib.contextmanager
def service() -> Iterator[Service]:
    running = Service()
    try:
        yield running
    finally:
        running.close()


def fuzz_service(check: Callable[[Service, bytes], None], check_every: int) -> None:
    """libFuzzer over one real service (the atheris targets): `check` each input against it, and every
    `check_every` inputs make sure the service still answers health and a valid snapshot."""
    import atheris  # noqa: PLC0415  # make fuzz only; the hypothesis tests import this module too

    with service() as running:
        count = 0

        def test_one_input(data: bytes) -> None:
            nonlocal count
            check(running, data)
            count += 1
            if count % check_every == 0:
                running.alive()

        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()


# --- policies and expressions ----------------------------------------------------------------------
def check_policy_load(folder: Path, profile: str | None = "balanced", environment: str | None = None) -> Policy | None:
    """load_effective: a policy, or PolicyError whose every diagnostic is located and coded; nothing else."""
    try:
        policy = load_effective([str(folder)], profile, environment)
    except PolicyError as error:
        expect(bool(error.diagnostics), "PolicyError without diagnostics")
        for diagnostic in error.diagnostics:
            expect(bool(diagnostic.file and diagnostic.code and diagnostic.message), f"bare: {diagnostic}")
            expect(diagnostic.text().startswith(diagnostic.file), f"not located: {diagnostic.text()[:300]}")
            if diagnostic.code.startswith("yaml-"):
                expect(diagnostic.line >= 1, f"a YAML finding without its line: {diagnostic.text()[:300]}")
        return None
    expect(policy.digest.startswith("sha256:"), f"digest {policy.digest!r}")
    return policy


def check_expr(text: str, facts: Any, thresholds: Any) -> Expr | None:
    """parse: an expression whose normal form parses back to itself, or ExprError with a known code."""
    try:
        expr = parse(text, facts, thresholds)
    except ExprError as error:
        expect(error.code in EXPR_CODES, f"unknown code {error.code!r} for {text[:200]!r}")
        expect(bool(error.message), f"{error.code} without a message for {text[:200]!r}")
        return None
    normal = to_source(expr)
    again = to_source(parse(normal, facts, {}))  # thresholds are substituted in the normal form
    expect(again == normal, f"normal form {normal!r} of {text[:200]!r} parses to {again!r}")
    return expr


# --- stored states (engine/state) -------------------------------------------------------------------------
STATE_KEY = bytes(range(32))
STATE_TEST = "fuzz-state"


@functools.cache
def _state_fixture() -> tuple[Any, Any, Any]:
    """The codec, an engine and a next snapshot, under the shipped policy."""
    from engine.contract import parse_snapshot  # noqa: PLC0415  # only the state targets need them
    from engine.pipeline import Engine  # noqa: PLC0415
    from engine.state import StateCodec  # noqa: PLC0415

    policy = load_effective([str(POLICIES)])
    row = json.loads((SCENARIOS / "sustained_medium_risk.jsonl").read_text().splitlines()[-1])
    following = parse_snapshot({**row, "test_id": STATE_TEST, "timestamp": "2030-01-01T00:00:00Z"})
    return StateCodec(policy, STATE_KEY), Engine.of(policy, remembered=0), following


def state_seeds() -> list[bytes]:
    """Bodies of states a service stores while it decides the scenarios (mode byte 0: sealed)."""
    from engine.contract import parse_snapshot  # noqa: PLC0415
    from engine.pipeline import Engine, Evaluator  # noqa: PLC0415
    from engine.state.layout import encode  # noqa: PLC0415

    policy = load_effective([str(POLICIES)])
    out = []
    for path in sorted(SCENARIOS.glob("*.jsonl")):
        evaluator = Evaluator(policy)
        evaluator.engine = Engine.of(policy, remembered=0)
        for index, line in enumerate(path.read_text().splitlines()):
            evaluator.evaluate(parse_snapshot(json.loads(line)))
            if index % 20 == 19:
                out += [b"\x00" + encode(state) for state in evaluator.tests.values()]
    return out


def check_state_blob(data: bytes, sealed: bool) -> None:
    """A stored state is refused with a reason, or it is a state the engine can go on from."""
    from engine.pipeline import step  # noqa: PLC0415
    from engine.state import REDIS, StateRejectedError  # noqa: PLC0415
    from engine.state.seal import seal  # noqa: PLC0415

    codec, engine, following = _state_fixture()
    blob = seal(STATE_KEY, REDIS, STATE_TEST, 1, codec.digest, codec.layout, data) if sealed else data
    try:
        state = codec.load(REDIS, STATE_TEST, 1, blob)
    except StateRejectedError as error:
        expect(bool(error.why), "a rejection says why")
        return
    expect(sealed, "a blob that was not sealed with the key was accepted")
    if state.last_time is not None and state.last_time > following.timestamp:
        return  # the service answers the snapshot FAILED_PRECONDITION (out of order); the log check refuses it first
    decision, _ = step(engine, state, following)
    expect(0.0 <= decision.risk_score <= 1.0, f"risk score {decision.risk_score} from a loaded state")
