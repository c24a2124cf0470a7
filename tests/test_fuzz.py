"""Fuzzing every entry point with random and mutated input, on a small budget (`make fuzz` runs longer).

Evaluate and EvaluateBatch over a real gRPC server (random bytes, hostile protobuf values, mutated
snapshots), POST /v1/evaluate over a real uvicorn server (random JSON, mutated snapshots), a fuzzed
stream against a rebuild from its log and a fresh in-memory engine, policy loading (mutated YAML) and
the `when` parser (random grammatical expressions). The invariants are fuzz/invariants.py's, which the
atheris targets check too. tests/test_hostile_input.py holds the hand-picked hostile cases, test_expr.py
random text and token soup for `when`; this file draws structured input around valid documents.
"""

from __future__ import annotations

import copy
import http.client
import json
import math
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import grpc
import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api.convert import to_dict
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.contract import parse_snapshot
from engine.pipeline import Evaluator
from engine.policy import PolicyError, load_effective
from engine.policy.catalog import FACTS
from engine.policy.documents import MAX_DEPTH, MAX_NODES, parse_text
from engine.service import Guard
from engine.store.sqlite import SqliteLog
from fuzz.invariants import (
    ALLOWED as ALLOWED_CODES,
)
from fuzz.invariants import (
    EVALUATE,
    EVALUATE_BATCH,
    POLICIES,
    Service,
    call_raw,
    check_batch_reply,
    check_evaluate_reply,
    check_expr,
    check_http,
    check_policy_load,
    seeds,
    violations,
)
from tests.conftest import snapshot

T = TypeVar("T")
SEEDS = seeds()
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def served() -> Iterator[Service]:
    """One real service for the module: what one input breaks, the next inputs meet."""
    running = Service()
    yield running
    running.alive()
    running.close()


# --- hostile scalar values ------------------------------------------------------------------------
EDGES = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e-300, 0.001, 0.0009, 0.5, 1.0, 1.0000001, 30.0, 100.0,
         100.00000001, 86_400.0, 86_400.5, 3_600_000.0, 3_600_000.1, 1e12, 1e308, -1.0, 2.0**63]  # fmt: skip
DOUBLES = st.sampled_from(EDGES) | st.floats()
INT64 = st.one_of(
    st.sampled_from([-(2**63), -1, 0, 1, 9, 10**12, 10**12 + 1, 2**53 + 1, 2**63 - 1]),
    st.integers(-(2**63), 2**63 - 1),
)
TEXT = st.one_of(
    st.sampled_from(["", " ", "\x00", "t1", "é", "\U0001f600", "\u202e", "a" * 201, "x" * 10_000, "snapshot.x"]),
    st.text(st.characters(codec="utf-8"), max_size=300),  # protobuf strings are valid UTF-8: no surrogates
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 and everything near it: each part in and out of range, every fraction and offset shape."""
    if draw(st.integers(0, 4)) == 0:
        return draw(TEXT)
    year = draw(st.sampled_from([0, 1, 1969, 1970, 2026, 9998, 9999]) | st.integers(0, 9999))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
    fraction = draw(st.sampled_from(["", ".", ".5", ".000001", ".123456789", ".1234567890"]))
    zone = draw(st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+0100", "+01"]))
    separator = draw(st.sampled_from(["T", "t", " ", "_"]))
    return f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return DOUBLES
    if field.type == FieldDescriptor.TYPE_INT64:
        return INT64
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_ENUM):  # page sizes; enums are open
        return st.sampled_from([-1, 0, 1, 2, 500, 501, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.name == "timestamp":
        return timestamps()
    if field.name == "test_id":
        return st.sampled_from(["fuzz-a", "fuzz-b"]) | TEXT
    return TEXT


@st.composite
def hostile(draw: st.DrawFn, descriptor: Any, depth: int = 0) -> Message:
    """A message of `descriptor` with each field left out or set to a hostile value of its type."""
    message: Message = getattr(pb, descriptor.name)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None:
            inner = draw(hostile(field.message_type, depth + 1)) if depth < 3 else None
            target = getattr(message, field.name)
            target.SetInParent()
            if inner is not None:
                target.CopyFrom(inner)
        elif field.is_repeated:
            size = draw(st.sampled_from([0, 1, 2, 9, 10, 11]) | st.integers(0, 140))
            getattr(message, field.name).extend(draw(st.lists(scalar(field), min_size=size, max_size=size)))
        else:
            setattr(message, field.name, draw(scalar(field)))
    return message


def fields_of(message: Message) -> list[tuple[Message, Any]]:
    """Every (message, field) of a message tree: set or not, the places a mutation may touch."""
    places = []
    for field in message.DESCRIPTOR.fields:
        places.append((message, field))
        if field.message_type is not None and message.HasField(field.name):
            places += fields_of(getattr(message, field.name))
    return places


@st.composite
def mutated_proto(draw: st.DrawFn) -> pb.Snapshot:
    """A valid snapshot with one to four typed mutations: a field cleared, set hostile, an item changed."""
    message = json_format.ParseDict(draw(st.sampled_from(SEEDS)), pb.Snapshot())
    if draw(st.booleans()):
        message.test_id = f"mutated-{draw(st.integers(0, 5))}"
    for _ in range(draw(st.integers(1, 4))):
        parent, field = draw(st.sampled_from(fields_of(message)))
        operation = draw(st.sampled_from(["clear", "set", "empty"]))
        if operation == "clear":
            parent.ClearField(field.name)
        elif field.message_type is not None:
            getattr(parent, field.name).CopyFrom(draw(hostile(field.message_type, 2)))
        elif field.is_repeated:
            items = getattr(parent, field.name)
            if operation == "empty" or not items:
                items.append(draw(scalar(field)))
            else:
                items[draw(st.integers(0, len(items) - 1))] = draw(scalar(field))
        else:
            setattr(parent, field.name, draw(scalar(field)))
    return message


# --- JSON values and mutations --------------------------------------------------------------------
KEYS = st.sampled_from(
    ["test_id", "timestamp", "interval_seconds", "rollout_percent", "champion", "challenger", "requests", "labeled",
     "correct", "latency_ms", "bounds", "counts", "p50", "errors", "cache", "l1", "hits"]
) | st.text(max_size=60)  # fmt: skip
JSON_LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80) | timestamps() | st.just("50")
)
JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=12) | st.dictionaries(KEYS, inner, max_size=8))


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The places in a JSON-like value, down to 16 levels (a snapshot or a policy has fewer)."""
    found = [prefix]
    if len(prefix) >= 16:
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


@st.composite
def mutated_json(draw: st.DrawFn) -> Any:
    """A valid snapshot with one to four untyped mutations: a key dropped or added, a value of any type."""
    row: Any = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths(row)))
        operation = draw(st.sampled_from(["drop", "set", "add", "wrap"]))
        if not path:
            row = draw(JSON) if operation == "set" else [row] if operation == "wrap" else row
            continue
        parent = row
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if operation == "drop":
            del parent[last]
        elif operation == "set":
            parent[last] = draw(JSON)
        elif operation == "wrap":
            parent[last] = [parent[last]]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(JSON)
        else:
            parent.append(draw(JSON))
    return row


def dumped(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as Python writes them, huge integers exact


# --- Evaluate over gRPC ---------------------------------------------------------------------------
def request_bytes(message: pb.Snapshot) -> bytes:
    return pb.EvaluateRequest(snapshot=message).SerializeToString()


def flipped(body: bytes) -> st.SearchStrategy[bytes]:
    """The bytes of a real request with a few bytes changed, cut or repeated."""

    @st.composite
    def edit(draw: st.DrawFn) -> bytes:
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            kind = draw(st.sampled_from(["flip", "cut", "dup"]))
            if kind == "flip":
                data[at] = draw(st.integers(0, 255))
            elif kind == "cut":
                del data[at:]
            else:
                data[at:at] = data[at : at + draw(st.integers(1, 16))]
        return bytes(data)

    return edit()


def evaluated(served: Service, body: bytes) -> None:
    reply = call_raw(served.channel, EVALUATE, body)
    if isinstance(reply, bytes):
        check_evaluate_reply(reply)


@settings(FUZZ, max_examples=150)
@given(st.binary(max_size=600) | mutated_proto().map(request_bytes).flatmap(flipped))
def test_random_bytes_as_an_evaluate_request(served: Service, body: bytes) -> None:
    """Any bytes at all: OK or a domain code, never UNKNOWN or INTERNAL."""
    evaluated(served, body)


@settings(FUZZ, max_examples=150)
@given(hostile(pb.Snapshot.DESCRIPTOR) | mutated_proto())
def test_hostile_protobuf_snapshots(served: Service, message: pb.Snapshot) -> None:
    """Structurally valid requests with NaN, infinities, negatives, huge numbers and strings, missing arms,
    timestamps of every shape: a decision or an error naming the field."""
    evaluated(served, request_bytes(message))


def test_the_service_survives_the_evaluate_fuzzing(served: Service) -> None:
    """After everything the module sent: health SERVING, valid snapshots decided, no bug of ours logged."""
    served.alive()


# --- EvaluateBatch ---------------------------------------------------------------------------------
@settings(FUZZ, max_examples=40)
@given(st.lists(st.sampled_from(SEEDS).map(lambda row: json_format.ParseDict(row, pb.Snapshot())) |
                hostile(pb.Snapshot.DESCRIPTOR) | mutated_proto(), max_size=12))  # fmt: skip
def test_batches_mixing_good_and_bad_snapshots(served: Service, snapshots: list[pb.Snapshot]) -> None:
    """Each item gets its decision or its own error naming `snapshots[i]`; the batch never fails INTERNAL."""
    reply = call_raw(served.channel, EVALUATE_BATCH, pb.EvaluateBatchRequest(snapshots=snapshots).SerializeToString())
    if isinstance(reply, bytes):
        check_batch_reply(reply, len(snapshots))


@settings(FUZZ, max_examples=60)
@given(st.binary(max_size=400))
def test_random_bytes_as_a_batch(served: Service, body: bytes) -> None:
    reply = call_raw(served.channel, EVALUATE_BATCH, body)
    if isinstance(reply, bytes):
        check_batch_reply(reply, None)


# --- every other method, and the gate in front of them ----------------------------------------------
SERVICE = pb.DESCRIPTOR.services_by_name["RiskService"]
OTHERS = [m for m in SERVICE.methods if not m.server_streaming and m.name not in ("Evaluate", "EvaluateBatch")]


def called(channel: grpc.Channel, method: Any, body: bytes, metadata: list[tuple[str, str]] = ()) -> grpc.StatusCode:  # type: ignore[assignment]
    """Any request to any method ends OK or with a domain code; INVALID_ARGUMENT names a field."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.client_streaming:
            stream = channel.stream_stream(path, request_serializer=None, response_deserializer=None)
            list(stream(iter([body, body]), metadata=metadata, timeout=10))
        else:
            channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                body, metadata=metadata, timeout=10
            )
    except grpc.RpcError as error:
        code = error.code()
        allowed = {*ALLOWED_CODES, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
        assert code in allowed, f"{method.name}: {code}: {error.details()}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert violations(error), f"{method.name}: INVALID_ARGUMENT names no field: {error.details()}"
        return code
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def others() -> Iterator[Service]:
    """A service of its own: these calls restart and roll back tests the other fuzz tests rely on."""
    running = Service()
    yield running
    running.alive()
    running.close()


@settings(FUZZ, max_examples=150)
def _requests_for(method: Any) -> st.SearchStrategy[tuple[Any, bytes]]:
    serialized = hostile(method.input_type).map(lambda message: message.SerializeToString())
    return st.tuples(st.just(method), st.binary(max_size=300) | serialized)


@given(st.sampled_from(OTHERS).flatmap(_requests_for))
def test_every_other_method_with_random_and_hostile_requests(others: Service, case: tuple[Any, bytes]) -> None:
    """GetTest, RestartTest, RollbackTest, ReportRollbackStep, ReloadPolicy, the listings and EvaluateStream:
    random bytes or hostile field values, and never UNKNOWN or INTERNAL."""
    called(others.channel, *case)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """A service behind an auth file with a static token and a JWT issuer: the gate itself is fuzzed."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from engine.api.servicer import create_server
    from engine.security.config import load_auth
    from engine.security.gate import Gate
    from engine.security.identity import new_token, token_hash

    folder = tmp_path_factory.mktemp("gated")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "jwks.json").write_text(
        json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "k"}]})
    )
    token = new_token()
    (folder / "auth.yaml").write_text(yaml.safe_dump({
        "tokens": [{"name": "viewer", "sha256": token_hash(token), "roles": ["viewer"]}],
        "jwt": {"jwks_file": "jwks.json", "issuer": "https://idp.test", "audience": "abguard"},
    }))  # fmt: skip
    running = Service()
    gate = Gate(load_auth(folder / "auth.yaml"), running.events.append)
    server, port, _ = create_server(running.guard, "127.0.0.1:0", 4, running.events.append, gate=gate)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    running.gated_channel = channel  # type: ignore[attr-defined]
    yield running, token
    channel.close()
    server.stop(2).wait()
    running.alive()
    running.close()


CREDENTIALS = st.one_of(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=120),
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", *[st.text("ABCDEFabcdef0123456789-_=", max_size=60)] * 3),
    st.sampled_from(["eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.x", "abg_", "a..b"]),
)


@settings(FUZZ, max_examples=150)
@given(st.sampled_from(OTHERS), st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer"]), CREDENTIALS)
def test_hostile_credentials_meet_only_unauthenticated(
    gated: tuple[Service, str], method: Any, scheme: str, credential: str
) -> None:
    """Garbage tokens, JWT-shaped garbage, alg none, unknown schemes: UNAUTHENTICATED, never a crash."""
    running, _ = gated
    code = called(running.gated_channel, method, b"", [("authorization", f"{scheme}{credential}")])  # type: ignore[attr-defined]
    assert code == grpc.StatusCode.UNAUTHENTICATED, f"{method.name} let {scheme}{credential!r} through: {code}"


# --- POST /v1/evaluate -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(FUZZ, max_examples=120)
@given(JSON.map(dumped) | mutated_json().map(dumped) | st.binary(max_size=300))
def test_random_and_mutated_json_over_http(served: Service, body: bytes) -> None:
    """Random JSON, mutated snapshots and raw bytes through the real uvicorn server: never a 500, and a
    problem+json that names the field."""
    check_http(*served.post("/v1/evaluate", body))


HTTP_PATHS = [
    ("POST", "/v1/tests/{t}/rollback"), ("POST", "/v1/tests/{t}/restart"),
    ("POST", "/v1/tests/{t}/rollbacks/{r}/steps"),
    ("POST", "/v1/flagger/{r}"), ("POST", "/v1/policy/reload"), ("POST", "/v1/session"), ("GET", "/v1/tests/{t}"),
    ("GET", "/v1/tests/{t}/decisions?page_size={q}&page_token={r}"), ("GET", "/v1/tests/{t}/audit?page_token={r}"),
    ("GET", "/v1/tests/{t}/rollbacks?page_size={q}"), ("GET", "/v1/tests/{t}/verdict"),
    ("GET", "/v1/tests/{t}/dashboard"), ("GET", "/v1/watch?action={r}"), ("GET", "/static/{r}"),
]  # fmt: skip
SEGMENT = st.sampled_from(["healthy", "fuzz-a", "a/b", "%2e%2e", "..", "%00", "x" * 300]) | st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"), min_size=1, max_size=40
)


@settings(FUZZ, max_examples=150)
@given(st.sampled_from(HTTP_PATHS), SEGMENT, SEGMENT, SEGMENT, JSON.map(dumped) | mutated_json().map(dumped))
def test_every_other_route_with_hostile_paths_queries_and_bodies(
    served: Service, route: tuple[str, str], test: str, other: str, query: str, body: bytes
) -> None:
    """Each route with hostile test ids, page tokens, actions and bodies: never a 500, always a problem+json
    document for an error (the watch's stream opens only for a valid action, which the segments never are)."""
    method, template = route
    path = template.format(t=test, r=other, q=query)
    connection = http.client.HTTPConnection(served.http.host, served.http.port, timeout=30)
    try:
        connection.request(method, path, body if method == "POST" else None, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        status, kind, text = answer.status, answer.getheader("content-type") or "", answer.read()
    finally:
        connection.close()
    assert status < 500 or status == 503, f"{method} {path}: {status}: {text[:300]!r}"
    if status >= 400:
        assert kind.startswith("application/problem+json"), f"{method} {path}: {status} as {kind}"
        assert json.loads(text)["status"] == status


def test_the_service_survives_the_http_fuzzing(served: Service) -> None:
    served.alive()


def test_http_answers_without_waiting_for_a_delayed_ack(served: Service) -> None:
    """Found by fuzzing (the HTTP target ran 22 inputs a second): the listening socket was made with proto 0,
    so asyncio left TCP_NODELAY off and every response waited ~40 ms for the client's delayed ACK."""
    assert served.http.socket.proto == socket.IPPROTO_TCP
    connection = http.client.HTTPConnection(served.http.host, served.http.port, timeout=10)
    try:
        started = time.monotonic()
        for _ in range(20):
            connection.request("GET", "/healthz")
            connection.getresponse().read()
        assert time.monotonic() - started < 0.5  # 20 x 40 ms = 0.8 s with Nagle; about 20 ms without
    finally:
        connection.close()


@pytest.mark.parametrize("key", ["", " "])
def test_an_empty_unknown_key_is_still_named(served: Service, key: str) -> None:
    """Found by fuzzing: `{"": null}` was refused naming the field "" (a message starting ": unknown field").
    A blank key is named quoted, at the top and inside an arm."""
    row = {**seeds()[0], key: None, "challenger": {**seeds()[0]["challenger"], key: 1}}
    status, kind, body = served.post("/v1/evaluate", dumped(row))
    assert status == 400
    fields = [error["field"] for error in check_http(status, kind, body)["errors"]]
    assert fields == [repr(key), f"challenger.{key!r}"]


# --- no decision that differs from a rebuild ---------------------------------------------------------
BAD_VALUES = [("challenger.requests", -1), ("interval_seconds", "NaN"), ("champion.cpu_utilization", 2.0),
              ("challenger.latency_ms.p95", 1e308), ("rollout_percent", -5.0), ("timestamp", "yesterday")]  # fmt: skip


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """Three tests' snapshots interleaved: new ones (drawn arms, gaps), rejected ones, late ones, resends
    with other numbers, restarts."""
    clock = dict.fromkeys(("r0", "r1", "r2"), 0)
    sent: list[tuple[str, dict[str, Any]]] = []
    for _ in range(draw(st.integers(5, 40))):
        test = draw(st.sampled_from(sorted(clock)))
        kind = draw(st.sampled_from(["new"] * 6 + ["bad", "late", "resend", "restart"]))
        if kind == "new":
            clock[test] += draw(st.sampled_from([1, 1, 1, 2, 5, 40]))
        # a late one is older than the test's last; after a restart it may start a run behind the old one
        step = clock[test] - (draw(st.integers(1, 3)) if kind == "late" else 0)
        volume = draw(st.sampled_from([0, 50, 2_000, 120_000]))
        labeled = draw(st.integers(0, volume // 10))
        row: dict[str, Any] = snapshot(
            test, step, requests=volume, labeled=labeled, correct=draw(st.integers(0, labeled)),
            errors={"extraction": draw(st.integers(0, volume)), "serialization": 0, "timeout": 0, "cache": 0},
            latency_ms={"p50": 1.0, "p95": draw(st.sampled_from([1.7, 3.0, 9.0])), "p99": 10.0, "mean": 1.2},
        )  # fmt: skip
        if kind == "bad":
            path, value = draw(st.sampled_from(BAD_VALUES))
            target = row
            *parents, last = path.split(".")
            for part in parents:
                target = target[part]
            target[last] = value
        sent.append(("restart" if kind == "restart" else "evaluate", row))
    return sent


@settings(FUZZ, max_examples=15)
@given(streams())
def test_no_decision_differs_from_a_rebuild(stream: list[tuple[str, dict[str, Any]]]) -> None:
    """A fuzzed stream over gRPC; then a guard rebuilt from the same log answers every accepted snapshot
    with the recorded decision and decides what follows as the live one would, and a fresh in-memory
    Evaluator fed the accepted snapshots makes the same decisions (ids included: they hash test, time, policy)."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        live = Service(data)
        stub = rpc.RiskServiceStub(live.channel)
        accepted: list[tuple[dict[str, Any], dict[str, Any]]] = []  # new decisions, in the order made
        recorded: dict[tuple[str, str], dict[str, Any]] = {}
        replay = Evaluator(live.policy)
        for kind, row in stream:
            if kind == "restart":
                try:
                    stub.RestartTest(pb.RestartTestRequest(test_id=row["test_id"], reason="fuzz"), timeout=10)
                    replay.restart(row["test_id"])
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND  # never evaluated yet
                continue
            reply = call_raw(live.channel, EVALUATE, request_bytes(json_format.ParseDict(row, pb.Snapshot())))
            if not isinstance(reply, bytes):
                continue
            decision = to_dict(check_evaluate_reply(reply))
            key = (row["test_id"], decision["timestamp"])
            if key in recorded:
                assert decision == recorded[key], f"a resend of {key} was decided anew"
                continue
            recorded[key] = decision
            accepted.append((row, decision))
            want = json.loads(json.dumps(replay.evaluate(parse_snapshot(row)).to_dict()))
            assert decision == want, f"the live decision of {key} differs from the in-memory engine's"
        live.alive()
        live.close()

        rebuilt = Guard(live.policy, SqliteLog.in_dir(data))  # as `serve` restarts: each test loaded on first call
        try:
            for row, decision in accepted:
                again = json.loads(json.dumps(rebuilt.evaluate(row)))
                where = f"{row['test_id']} at {row['timestamp']}"
                assert again == decision, f"{where}: the rebuilt guard answers otherwise: {brief(stream)}"
            for test in ("r0", "r1", "r2"):  # what follows the log: the rebuilt state decides as the live one
                if test not in replay.tests:
                    continue
                # after every time the log holds of the test, in any run: an earlier one would be a resend
                last = max(decision_time(row) for row, _ in accepted if row["test_id"] == test)
                row = snapshot(test, int((last - decision_time(snapshot(test, 0))) // 30) + 1)
                got = json.loads(json.dumps(rebuilt.evaluate(row)))
                want = json.loads(json.dumps(replay.evaluate(parse_snapshot(row)).to_dict()))
                assert got == want, f"{test}: the rebuilt state decides what follows differently: {brief(stream)}"
        finally:
            rebuilt.close()


def test_a_resend_after_a_restart_whose_run_went_back_in_time_is_answered_from_the_log(tmp_path: Path) -> None:
    """Found by fuzzing: after RestartTest, a new run whose first snapshot is older than the old run's last
    made a resend of the old run's last snapshot a new decision (a second one for the same test and time),
    because the log was asked only for times at or before the held state's last. Also after a restart of
    the service."""
    guard = Guard(load_effective([str(POLICIES)]), SqliteLog.in_dir(tmp_path))
    try:
        first = guard.evaluate(snapshot("t", 1))
        guard.restart("t", "again")
        guard.evaluate(snapshot("t", 0))
        assert guard.evaluate(snapshot("t", 1, requests=5)) == first
        assert guard.log.count("t") == 2
    finally:
        guard.close()
    again = Guard(load_effective([str(POLICIES)]), SqliteLog.in_dir(tmp_path))
    try:
        again.evaluate(snapshot("t", 0, requests=7))  # loads the new run from the log
        assert again.evaluate(snapshot("t", 1, requests=5)) == first
        assert again.log.count("t") == 2
    finally:
        again.close()


def brief(stream: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """A stream in one line each: what was sent, for which test, when, with which challenger numbers."""
    out = []
    for kind, row in stream:
        arm = row["challenger"]
        out.append((kind, row["test_id"], row["timestamp"][11:19], arm["requests"], arm["labeled"], arm["correct"],
                    arm["errors"]["extraction"], arm["latency_ms"]["p95"]))  # fmt: skip
    return out


def decision_time(row: dict[str, Any]) -> float:
    return parse_snapshot(row).timestamp


# --- policy loading --------------------------------------------------------------------------------
class Hang(Exception):
    """The bounded call ran past its time."""


def bounded(seconds: float, call: Callable[[], T]) -> T:
    """Run `call`, raising Hang if it takes longer than `seconds` (SIGALRM: pytest runs tests in the main thread)."""

    def ring(_signal: int, _frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def policy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("fuzz") / "policies"
    shutil.copytree(POLICIES, target, ignore=shutil.ignore_patterns("tests", "schema"))
    return target


POLICY_FILES = sorted(str(p.relative_to(POLICIES)) for p in POLICIES.rglob("*.yaml") if "tests" not in p.parts)
YAML_VALUES = JSON_LEAVES | st.sampled_from(
    [10**400, 1e308, math.nan, -math.inf, "", "accuracy.challenger <", "not not not x.y < 1", [[[[[]]]]], {"a": None}]
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def bomb(levels: int) -> str:
    """A "billion laughs" of YAML anchors and aliases: 10**levels values from a few lines."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@st.composite
def mutated_policy(draw: st.DrawFn) -> tuple[str, bytes]:
    """One shipped policy file with data or text mutations: keys dropped, wrong types, huge numbers, deep
    nesting, an alias bomb, invalid UTF-8, bytes changed or cut."""
    name = draw(st.sampled_from(POLICY_FILES))
    text = (POLICIES / name).read_text()
    if draw(st.booleans()):
        data = yaml.safe_load(text)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths(data)[1:]))
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            operation = draw(st.sampled_from(["drop", "set", "set", "nest"]))
            if operation == "drop":
                del parent[path[-1]]
            elif operation == "set":
                parent[path[-1]] = draw(YAML_VALUES)
            else:  # around MAX_DEPTH, and as deep as PyYAML can write
                parent[path[-1]] = nested(draw(st.sampled_from([3, 60, 70, 150])))
        text = yaml.safe_dump(data, sort_keys=False, width=10**6)
        if draw(st.integers(0, 5)) == 0:
            text = bomb(draw(st.integers(2, 9))) + text
        return name, text.encode()
    raw = bytearray(text.encode())
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(raw) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "utf8", "anchor"]))
        if kind == "flip":
            raw[at] = draw(st.sampled_from(b" :-[]{}&*!|>'\"#%@`\n\t0a"))
        elif kind == "cut":
            del raw[at:]
            if not raw:
                break
        elif kind == "utf8":
            raw[at:at] = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x00"]))
        else:
            raw[at:at] = draw(st.sampled_from([b"&a ", b"*a", b"<<: *a\n", b"!!python/object:os.system ''\n"]))
    return name, bytes(raw)


@settings(FUZZ, max_examples=60)
@given(mutated_policy(), st.sampled_from([("balanced", None), (None, None), ("conservative", "prod"), (None, "dev")]))
def test_mutated_policies_load_or_fail_with_located_diagnostics(
    policy_copy: Path, mutation: tuple[str, bytes], overlays: tuple[str | None, str | None]
) -> None:
    """load_effective on a mutated copy of policies/: a policy or PolicyError naming file:line, never another
    exception, never more than a few seconds."""
    name, content = mutation
    target = policy_copy / name
    try:
        target.write_bytes(content)
        bounded(10.0, lambda: check_policy_load(policy_copy, *overlays))
    finally:
        target.write_bytes((POLICIES / name).read_bytes())


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_at_once(policy_dir: Path, levels: int) -> None:
    """Found by fuzzing: a few lines of anchors and aliases expand to 10**9 values, and indexing their lines
    walked every one (hours). The document is refused once its expansion passes MAX_NODES."""
    (policy_dir / "default.yaml").write_text(bomb(levels) + (policy_dir / "default.yaml").read_text())
    started = time.monotonic()
    with pytest.raises(PolicyError) as refused:
        bounded(10.0, lambda: load_effective([str(policy_dir)]))
    assert time.monotonic() - started < 2.0
    found = [d for d in refused.value.diagnostics if d.code == "yaml-too-large"]
    assert found and str(MAX_NODES) in found[0].message and found[0].file.endswith("default.yaml")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 300, 5000])
def test_deep_nesting_is_refused_not_a_recursion_error(policy_dir: Path, depth: int) -> None:
    """Found by fuzzing: 500 nested lists ended PyYAML's recursive composer with RecursionError, and fewer
    would end the recursive stages after it (schema, merge, digest). Past MAX_DEPTH: `yaml-too-deep`."""
    path = policy_dir / "profiles" / "balanced.yaml"
    path.write_text(path.read_text() + f"extra: {'[' * depth}1{']' * depth}\n")
    with pytest.raises(PolicyError) as refused:
        load_effective([str(policy_dir)])
    codes = {d.code for d in refused.value.diagnostics if d.file.endswith("balanced.yaml")}
    assert "yaml-too-deep" in codes, refused.value


def test_aliases_and_nesting_within_the_bounds_are_read() -> None:
    """The bounds refuse nothing a policy could need: 10**4 aliased values and MAX_DEPTH levels are read."""
    document, problems = parse_text(bomb(3) + f"deep: {'[' * (MAX_DEPTH - 1)}1{']' * (MAX_DEPTH - 1)}\n", "p.yaml")
    assert document is not None and problems == []
    assert len(document.data["l3"]) == 10 and document.data["l3"][9][9][9][9] == "lol"


# --- the `when` parser -------------------------------------------------------------------------------
THRESHOLDS = {"limit": 0.05, "tiny": 5e-324, "huge": 1e308, "zero": 0.0, "flag": True}
NUMBERS = st.sampled_from(
    ["0", "1", "0.5", "-2", "1e308", "1e-320", "5e-324", "1e400", "10**3", "0x1f", "1_000", "True"]
)
ATOMS = st.sampled_from(sorted(FACTS)[:40]) | st.sampled_from([*THRESHOLDS, "nope", "x.y", "accuracy"]) | NUMBERS


def arithmetic(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operator = st.sampled_from([" * ", " / ", " + ", " - ", " ** ", " % "])
    return st.tuples(inner, operator, inner).map("".join) | inner.map(lambda t: f"({t})") | inner.map("-{}".format)


TERMS = st.recursive(ATOMS, arithmetic, max_leaves=6)
COMPARISONS = st.tuples(TERMS, st.lists(st.tuples(st.sampled_from([" < ", " <= ", " > ", " >= ", " == ", " != ",
                                                                    " in ", " is "]), TERMS), min_size=1, max_size=3)
                        ).map(lambda c: c[0] + "".join(op + t for op, t in c[1]))  # fmt: skip


def boolean(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    joined = st.lists(inner, min_size=2, max_size=4)
    return joined.map(" and ".join) | joined.map(" or ".join) | inner.map("not {}".format) | inner.map("({})".format)


EXPRESSIONS = st.recursive(COMPARISONS, boolean, max_leaves=12)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    """Grammatical `when` expressions, sometimes nested past every limit, sometimes with characters edited."""
    text = draw(EXPRESSIONS)
    shape = draw(st.integers(0, 9))
    if shape == 0:
        text = "not " * draw(st.sampled_from([50, 400, 1000])) + text
    elif shape == 1:
        depth = draw(st.sampled_from([50, 150, 250]))
        text = "(" * depth + text + ")" * depth
    elif shape == 2:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["(", ")", "[", "'", "\\", "\x00", ":", "lambda ", "\n"])) + text[at:]
    return text


@pytest.mark.filterwarnings("ignore::SyntaxWarning")
@settings(FUZZ, max_examples=300)
@given(expressions())
def test_grammatical_expressions_parse_or_raise_only_expr_error(text: str) -> None:
    """Each expression: ExprError with one of the parser's codes, or a normal form that parses back to itself."""
    check_expr(text, FACTS, THRESHOLDS)
