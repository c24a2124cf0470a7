"""Batch and restart benchmark: EvaluateBatch throughput on one SQLite process and on
`--processes 2` over PostgreSQL and Redis, and how soon a restarted service answers over a long log.

CLIENTS channels (one connection each, so the kernel spreads them over the processes) send
batches of BATCH snapshots for DURATION seconds; each client owns its tests, so every test's
snapshots stay in order. The restart run copies one test's decisions into RESTART_TESTS tests
(SQL, not decisions made one by one) and times from `abguard serve` starting to the first answer.

    .venv/bin/python bench/bench_batch.py     (PostgreSQL and Redis from ABGUARD_TEST_*_URL)
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import json_format

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.api.v1 import risk_pb2 as pb  # noqa: E402
from engine.api.v1 import risk_pb2_grpc as rpc  # noqa: E402

CLIENTS, TESTS_PER_CLIENT, BATCH, DURATION = 4, 25, 100, 8.0
RESTART_TESTS = 400
GOAL_BATCH, GOAL_RESTART = 20_000, 1.0
POSTGRES = os.environ.get("ABGUARD_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"
REDIS = os.environ.get("ABGUARD_TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
ABGUARD = str(Path(sys.executable).parent / "abguard")


def rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "scenarios" / "healthy.jsonl").read_text().splitlines()]


def batches(client: int, count: int) -> list[pb.EvaluateBatchRequest]:
    """`count` batches of BATCH snapshots of this client's tests: rounds of one snapshot per test, 30 s apart."""
    base, start = rows(), 1_795_000_000
    rounds_per_batch = BATCH // TESTS_PER_CLIENT
    out = []
    for number in range(count):
        snapshots = []
        for round_ in range(number * rounds_per_batch, (number + 1) * rounds_per_batch):
            for test in range(TESTS_PER_CLIENT):
                row = dict(base[round_ % len(base)])
                row["test_id"] = f"bench-{client}-{test}"
                row["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 30 * round_))
                snapshots.append(json_format.ParseDict(row, pb.Snapshot()))
        out.append(pb.EvaluateBatchRequest(snapshots=snapshots))
    return out


def serve(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [ABGUARD, "serve", "--listen", "127.0.0.1:0", "--policies", str(ROOT / "policies"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()  # keep the pipe drained
    address = first["listen"]
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    time.sleep(1.0 if "--processes" in args else 0.2)  # every process listening
    return process, address


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def throughput(address: str) -> tuple[float, int]:
    """Evaluations per second over DURATION, and the errors seen."""
    count = int(DURATION * 60) + 20  # more than a client can send in DURATION
    work = [batches(client, count) for client in range(CLIENTS)]
    done = [0] * CLIENTS
    errors = [0]
    deadline = time.perf_counter() + DURATION

    def client(index: int) -> None:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = rpc.RiskServiceStub(channel)
            for request in work[index]:
                if time.perf_counter() > deadline:
                    return
                try:
                    reply = stub.EvaluateBatch(request, timeout=30)
                except grpc.RpcError:
                    errors[0] += 1
                    continue
                done[index] += sum(1 for result in reply.results if result.HasField("decision"))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started), errors[0]


def restart_seconds(data: Path) -> tuple[float, int]:
    """Seconds from `abguard serve` starting over a log of RESTART_TESTS long tests to its first answer."""
    process, address = serve(["--data-dir", str(data)])
    row = rows()
    with grpc.insecure_channel(address) as channel:
        stub = rpc.RiskServiceStub(channel)
        for snapshot in row[:-1]:
            stub.Evaluate(pb.EvaluateRequest(snapshot=json_format.ParseDict(snapshot, pb.Snapshot())), timeout=10)
    stop(process)
    db = sqlite3.connect(data / "decisions.sqlite3")
    with db:
        for n in range(RESTART_TESTS):
            db.execute(
                "INSERT INTO decisions (decision_id, test_id, event_time, received_at, action, policy_name,"
                " policy_version, policy_digest, snapshot, decision) SELECT decision_id || ?, ?, event_time,"
                " received_at, action, policy_name, policy_version, policy_digest, snapshot, decision"
                " FROM decisions WHERE test_id = 'healthy'",
                (str(n), f"copy-{n}"),
            )
    logged = int(db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    db.close()
    began = time.perf_counter()
    process = subprocess.Popen(
        [ABGUARD, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--policies", str(ROOT / "policies")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    address = json.loads(process.stdout.readline())["listen"]
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    with grpc.insecure_channel(address) as channel:
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict(row[-1], pb.Snapshot()))
        rpc.RiskServiceStub(channel).Evaluate(request, timeout=60, wait_for_ready=True)
    seconds = time.perf_counter() - began
    stop(process)
    return seconds, logged


def main() -> int:
    schema = f"abguard_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect(POSTGRES, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    parts = urllib.parse.urlsplit(POSTGRES)
    log_url = urllib.parse.urlunsplit(
        parts._replace(query=urllib.parse.urlencode({"options": f"-csearch_path={schema}"}))
    )
    state_url = f"{REDIS}?prefix={schema}"
    results = {}
    try:
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
            process, address = serve(["--data-dir", one])
            try:
                results["SQLite, 1 process"] = throughput(address)
            finally:
                stop(process)
            process, address = serve(
                ["--data-dir", two, "--log", log_url, "--state", state_url, "--processes", "2", "--workers", "8"]
            )
            try:
                results["PostgreSQL + Redis, 2 processes"] = throughput(address)
            finally:
                stop(process)
        with tempfile.TemporaryDirectory() as data:
            seconds, logged = restart_seconds(Path(data))
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    print(f"EvaluateBatch: {CLIENTS} clients, batches of {BATCH} snapshots, {DURATION:g} s, {os.cpu_count()} cores")
    for name, (rate, errors) in results.items():
        print(f"  {name:34} {rate:>8.0f} evals/s  errors {errors}  ({rate / GOAL_BATCH:.2f} of the {GOAL_BATCH} goal)")
    print(f"restart over {logged} logged decisions of {RESTART_TESTS + 1} tests: first answer after {seconds:.2f} s"
          f" (goal <= {GOAL_RESTART:g} s, the interpreter's start included)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
