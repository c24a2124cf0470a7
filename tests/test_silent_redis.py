"""A Redis that stops answering (packets held, nothing closed) is UNAVAILABLE to a gateway whose
deadline is a few seconds, never DEADLINE_EXCEEDED: each Redis command waits at most REDIS_TIMEOUT,
retried once at once; and serving resumes once Redis answers again, nothing lost."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format

from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.service import Guard
from engine.store.postgres import PostgresLog
from engine.store.redis_state import REDIS_TIMEOUT, RedisStates
from tests.conftest import snapshot
from tests.support.shared import TcpProxy, postgres_schema, redis_prefix, through
from tests.test_service import POLICY


@pytest.fixture
def proxied() -> Iterator[tuple[str, str, TcpProxy]]:
    """The log's URL, and Redis's through a proxy (a shared state needs a shared log)."""
    with postgres_schema() as log_url, redis_prefix() as url:
        proxy = TcpProxy(url)
        try:
            yield log_url, through(url, proxy), proxy
        finally:
            proxy.close()


def test_a_silent_redis_is_unavailable_within_a_short_deadline(proxied: tuple[str, str, TcpProxy]) -> None:
    log_url, url, proxy = proxied
    guard = Guard(POLICY, PostgresLog(log_url), shared=RedisStates(url))
    guard.rebuild()
    server, port, _ = create_server(guard, "127.0.0.1:0", 4)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = rpc.RiskServiceStub(channel)

    def evaluate(step: int, deadline: float) -> pb.EvaluateResponse:
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(snapshot("silent-redis", step), pb.Snapshot()))
        answer: pb.EvaluateResponse = stub.Evaluate(request, timeout=deadline)
        return answer

    try:
        assert evaluate(0, 5).decision.test_id == "silent-redis"
        proxy.silence()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            evaluate(1, 1.5)  # a gateway with a 1.5 s deadline
        took = time.monotonic() - started
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert took < 1.5 and took < 3 * REDIS_TIMEOUT, took
        proxy.speak()
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = evaluate(1, 5)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "not serving again after Redis answered"
                time.sleep(0.2)
        assert answer.decision.test_id == "silent-redis"
    finally:
        proxy.speak()
        channel.close()
        server.stop(2).wait()
        guard.close()
