"""`abguard demo`: start the real service in a temporary data dir, stream the bundled scenarios
through gRPC, print a readable timeline of what changed, show the rolled-back tests, stop."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..api.convert import to_dict
from ..api.v1 import risk_pb2 as pb
from ..api.v1 import risk_pb2_grpc as rpc
from .render import table_header, table_row

OK, FINDINGS = 0, 1
SCENARIOS = ("healthy", "latency_spike", "error_storm", "accuracy_regression", "sustained_medium_risk")


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the service on a temporary data dir and replay the scenarios")
    demo.add_argument("--scenarios", default="scenarios", metavar="DIR")
    demo.add_argument("--policies", default="policies", metavar="DIR")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="abguard-demo-") as data_dir:
        command = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--policies",
            args.policies,
        ]
        server = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line:
                print("abguard demo: the service did not start", file=sys.stderr)
                return FINDINGS
            started = json.loads(line)
            events: list[str] = []
            drain = threading.Thread(target=lambda: events.extend(server.stdout or ()), daemon=True)
            drain.start()  # the service logs a line per decision: keep its pipe from filling up
            print(
                f"abguard serve is listening on {started['listen']} (policy {started['policy']['name']} "
                f"v{started['policy']['version']} {started['policy']['digest'][:19]}..., profile {started['profile']})"
            )
            print(f"decision log: {data_dir}/decisions.sqlite3\n")
            with grpc.insecure_channel(started["listen"]) as channel:
                if not _wait_until_serving(channel, 60):
                    print("abguard demo: the service did not become ready", file=sys.stderr)
                    return FINDINGS
                stub = rpc.RiskServiceStub(channel)
                for name in SCENARIOS:
                    _replay(stub, Path(args.scenarios) / f"{name}.jsonl")
                _summary(stub)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        logged = sum('"event":"decision"' in event for event in events)
        print(f"\nabguard serve stopped (exit {server.returncode}) after SIGTERM; it logged {logged} decision lines.")
        return OK if server.returncode == 0 else FINDINGS


def _wait_until_serving(channel: grpc.Channel, seconds: float) -> bool:
    """The port opens before the state is rebuilt: wait for health to say SERVING."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2, wait_for_ready=True)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    return False


def _replay(stub: rpc.RiskServiceStub, path: Path) -> None:
    """Stream one scenario; print the rows where the action, level or traffic changed."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    print(f"== {path.stem}: {len(lines)} snapshots, every 30 s (rows where nothing changed are left out)")
    print(table_header())
    previous: tuple[str, str, Any] | None = None
    started = time.perf_counter()
    for line in lines:
        snapshot = json_format.Parse(line, pb.Snapshot())
        decision = to_dict(stub.Evaluate(pb.EvaluateRequest(snapshot=snapshot), timeout=10).decision)
        key = (decision["action"], decision["risk_level"], decision["target_rollout_percent"])
        if key != previous:
            print(table_row(decision))
        previous = key
    elapsed = time.perf_counter() - started
    print(f"   ({len(lines)} Evaluate calls in {elapsed * 1000:.0f} ms)\n")


def _summary(stub: rpc.RiskServiceStub) -> None:
    print("== tests after the replay (GetTest)")
    for name in SCENARIOS:
        test_id = name.replace("_", "-")
        view = stub.GetTest(pb.GetTestRequest(test_id=test_id), timeout=10)
        status = pb.TestStatus.Name(view.test_status).removeprefix("TEST_STATUS_").lower()
        target = f"{view.target_rollout_percent:g}%" if view.HasField("target_rollout_percent") else "-"
        line = f"{test_id:24} {status:12} traffic {target:5} {view.decisions} decisions"
        if view.rolled_back_at:
            line += f", rolled back at {view.rolled_back_at}"
        print(line)
    rolled = [n for n in SCENARIOS if n != "healthy"]
    print("\nWhy the first rollback happened, as recorded:")
    for name in rolled[:1]:
        decisions = stub.ListDecisions(
            pb.ListDecisionsRequest(test_id=name.replace("_", "-"), page_size=500), timeout=10
        )
        first = next(
            (
                d
                for d in reversed(decisions.decisions)
                if d.action in (pb.ACTION_ROLLBACK, pb.ACTION_IMMEDIATE_ROLLBACK)
            ),
            None,
        )
        if first is not None:
            print(f"  {first.test_id} at {first.timestamp}: {first.reason}")
