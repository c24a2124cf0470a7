"""Limits per identity through real gRPC and HTTP servers: a request rate answered RESOURCE_EXHAUSTED with
RetryInfo (429 with Retry-After), the tests one identity may feed, its watch streams, the size of a
request, and a deadline that has passed before the work starts."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from engine.api.servicer import RiskServicer, create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.http import HttpServer, create_app
from engine.http.server import trusted_networks
from engine.security.config import load_auth
from engine.security.gate import CURRENT, Gate
from engine.security.identity import Identity, new_token, token_hash
from engine.security.limits import LimitError, Limits, LimitSettings
from engine.service import Guard
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot
from tests.test_service import POLICY

GATEWAY, OTHER = new_token(), new_token()


class Served:
    def __init__(self, folder: Path, limits: dict[str, Any]) -> None:
        (folder / "auth.yaml").write_text(
            yaml.safe_dump(
                {
                    "tokens": [
                        {"name": "gw", "sha256": token_hash(GATEWAY), "roles": ["gateway", "viewer"]},
                        {"name": "other", "sha256": token_hash(OTHER), "roles": ["gateway", "viewer"]},
                    ],
                    "limits": limits,
                }
            )
        )
        self.gate = Gate(load_auth(folder / "auth.yaml"))
        self.guard = Guard(POLICY, SqliteLog.in_dir(folder / "data"))
        self.guard.rebuild()
        self.server, port, _ = create_server(self.guard, "127.0.0.1:0", 8, None, None, False, self.gate)
        self.server.start()
        self.address = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = rpc.RiskServiceStub(self.channel)
        self.web = HttpServer(create_app(self.guard, gate=self.gate), "127.0.0.1:0")
        self.web.start()

    def evaluate(self, row: dict[str, Any], token: str = GATEWAY) -> Any:
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot()))
        return self.stub.Evaluate(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)

    def post(self, path: str, body: bytes, token: str = GATEWAY, chunked: bool = False) -> tuple[int, Any, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.web.port, timeout=10)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if chunked:
            connection.request("POST", path, body=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
                               headers=headers, encode_chunked=True)  # fmt: skip
        else:
            connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        text = answer.read()
        connection.close()
        return answer.status, answer.headers, json.loads(text) if text else None

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(2).wait()
        self.web.stop(5)
        self.guard.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(**limits: Any) -> Served:
        folder = tmp_path / str(len(started))
        folder.mkdir()
        started.append(Served(folder, limits))
        return started[-1]

    yield start
    for served in started:
        served.stop()


def retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    raise AssertionError("no RetryInfo in the status")


def test_past_its_rate_an_identity_is_told_how_long_to_wait_and_others_are_not_slowed(serve: Any) -> None:
    served = serve(requests_per_second=2, burst=3)
    for step in range(3):
        served.evaluate(snapshot("rated", step))
    with pytest.raises(grpc.RpcError) as refused:
        served.evaluate(snapshot("rated", 3))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "gw sent more than 2 requests a second" in (refused.value.details() or "")
    assert 0 < retry_delay(refused.value) <= 0.5
    served.evaluate(snapshot("other-rated", 0), token=OTHER)  # another identity has its own bucket
    status, headers, problem = served.post("/v1/evaluate", json.dumps(snapshot("rated", 3)).encode())
    assert (status, problem["code"]) == (429, "RESOURCE_EXHAUSTED") and int(headers["Retry-After"]) >= 1
    time.sleep(retry_delay(refused.value) + 0.05)
    assert served.evaluate(snapshot("rated", 3)).decision.test_id == "rated"  # the wait it was told was enough


def test_an_identity_feeds_at_most_its_share_of_tests(serve: Any) -> None:
    served = serve(tests_per_identity=2)
    served.evaluate(snapshot("a", 0))
    served.evaluate(snapshot("b", 0))
    with pytest.raises(grpc.RpcError) as refused:
        served.evaluate(snapshot("c", 0))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 2 tests per identity" in (refused.value.details() or "")
    served.evaluate(snapshot("a", 1))  # its tests go on
    served.evaluate(snapshot("c", 0), token=OTHER)  # another identity's share is its own
    batch = pb.EvaluateBatchRequest(snapshots=[json_format.ParseDict(snapshot("d", 0), pb.Snapshot())])
    with pytest.raises(grpc.RpcError) as whole:
        served.stub.EvaluateBatch(batch, metadata=[("authorization", f"Bearer {GATEWAY}")], timeout=10)
    assert whole.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.guard.tests().count("d") == 0  # nothing of a refused call is kept


def test_watch_streams_are_counted_per_identity(serve: Any) -> None:
    served = serve(watch_streams_per_identity=1)
    md = [("authorization", f"Bearer {GATEWAY}")]
    first = served.stub.WatchDecisions(pb.WatchDecisionsRequest(), metadata=md, timeout=30)

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # CANCELLED when the test lets go of it
            for _ in first:
                pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while True:  # the first stream holds the slot once the server has opened it
        try:
            list(served.stub.WatchDecisions(pb.WatchDecisionsRequest(), metadata=md, timeout=1))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert "gw holds 1 watch streams, the most allowed" in (error.details() or "")
                break
        assert time.monotonic() < deadline, "the second stream was never refused"
    other = served.stub.WatchDecisions(pb.WatchDecisionsRequest(), metadata=[("authorization", f"Bearer {OTHER}")],
                                       timeout=0.5)  # fmt: skip
    with pytest.raises(grpc.RpcError) as ended:
        list(other)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # allowed: it ran until its deadline
    first.cancel()
    reader.join(5)
    deadline = time.monotonic() + 10
    while True:  # the slot is free again once the server sees the cancel
        try:
            list(served.stub.WatchDecisions(pb.WatchDecisionsRequest(), metadata=md, timeout=0.3))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                break
        assert time.monotonic() < deadline, "the slot of a cancelled stream was not given back"


def test_a_request_larger_than_the_limit_is_refused_unread(serve: Any) -> None:
    served = serve(request_bytes=65536)
    row = snapshot("big", 0)
    row["test_id"] = "x" * 70_000
    with pytest.raises(grpc.RpcError) as refused:
        served.evaluate(row)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    body = json.dumps({**snapshot("big", 0), "padding": " " * 70_000}).encode()
    for chunked in (False, True):  # with a Content-Length, and without one (chunked)
        status, _, problem = served.post("/v1/evaluate", body, chunked=chunked)
        assert (status, problem["code"]) == (413, "CONTENT_TOO_LARGE")
    assert served.evaluate(snapshot("small", 0)).decision.test_id == "small"


class _Expired:
    """A servicer context whose deadline has passed: abort raises as gRPC's does."""

    def __init__(self) -> None:
        self.code: Any = None

    def time_remaining(self) -> float:
        return -0.5

    def abort_with_status(self, status: Any) -> None:
        self.code = status.code
        raise RuntimeError("aborted")


def test_a_call_whose_deadline_passed_is_not_decided(tmp_path: Path) -> None:
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path))
    try:
        servicer = RiskServicer(guard)
        context = _Expired()
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(snapshot("late", 0), pb.Snapshot()))
        with pytest.raises(RuntimeError, match="aborted"):
            servicer.Evaluate(request, context)
        assert context.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert guard.tests() == []
    finally:
        guard.close()


def test_limits_forget_the_least_recent_identities_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.security import limits

    monkeypatch.setattr(limits, "TRACKED", 3)
    now = [0.0]
    bounded = Limits(LimitSettings(requests_per_second=1, burst=1), clock=lambda: now[0])
    for who in ("a", "b", "c", "d"):
        bounded.admit(who)
    assert len(bounded._buckets) == 3
    with pytest.raises(LimitError):
        bounded.admit("d")
    bounded.admit("a")  # forgotten: a new full bucket, never more memory than TRACKED buckets
    now[0] = 1.0
    bounded.admit("d")


def test_the_current_identity_is_what_the_service_records() -> None:
    token = CURRENT.set(Identity("alice", frozenset({"operator"}), "token"))
    try:
        from engine.security.gate import requester, restart_reason

        assert requester("") == "alice" and requester("pager") == "alice (for pager)"
        assert restart_reason("fixed") == "fixed (restarted by alice)"
    finally:
        CURRENT.reset(token)
    from engine.contract import InputError
    from engine.security.gate import requester

    with pytest.raises(InputError, match="requested_by"):  # without an auth file the stated name is required
        requester(" ")


def test_the_evaluate_client_waits_as_told_and_stops_on_credentials(
    serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    served = serve(requests_per_second=20, burst=2)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(snapshot("paced", step)) + "\n" for step in range(8)))
    address = served.address
    assert main(["evaluate", "--server", address, "--token", GATEWAY, "--input", str(source)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 8 and err == ""  # every line decided: the client paced itself
    assert main(["evaluate", "--server", address, "--input", str(source)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "UNAUTHENTICATED" in err  # one line, not one per snapshot
    assert err.rstrip().endswith("(give --token or ABGUARD_TOKEN)")


def guesses(served: Served, count: int) -> list[int]:
    """Bad tokens, each from a different address as X-Forwarded-For tells it."""
    statuses = []
    for i in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", served.web.port, timeout=10)
        headers = {"Authorization": f"Bearer {new_token()}", "X-Forwarded-For": f"203.0.113.{i % 250 + 1}"}
        connection.request("GET", "/v1/tests/guessed", headers=headers)
        answer = connection.getresponse()
        answer.read()
        connection.close()
        statuses.append(answer.status)
    return statuses


def test_a_forwarded_address_from_an_untrusted_peer_does_not_escape_the_per_address_limit(serve: Any) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told not to: 300 guesses rotated past the
    limit on unauthenticated callers. Without --trusted-proxies the peer's own address counts."""
    served = serve(requests_per_second=2, burst=3)
    statuses = guesses(served, 12)
    assert statuses[:3] == [401, 401, 401]
    assert 429 in statuses, statuses


def test_a_trusted_proxy_names_the_caller(serve: Any) -> None:
    served = serve(requests_per_second=2, burst=3)
    served.web.stop(5)
    served.web = HttpServer(create_app(served.guard, gate=served.gate), "127.0.0.1:0", trusted_proxies=["127.0.0.0/8"])
    served.web.start()
    assert guesses(served, 12) == [401] * 12  # twelve callers, one guess each


def test_a_bad_trusted_proxy_is_named() -> None:
    with pytest.raises(ValueError, match=r"--trusted-proxies: 'not-an-ip' is not an IP address or network"):
        trusted_networks(["10.0.0.0/8", "not-an-ip"])
