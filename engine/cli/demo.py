"""`abguard demo`: start the real service in a temporary data dir, stream the bundled scenarios
through gRPC, print a readable timeline of what changed, show the rolled-back tests, act as the
gateway for one rollback's steps and show its phases, the flag abguard flipped and the alert
that fired (the real Alertmanager when the machine has it), stop."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..api.convert import to_dict
from ..api.v1 import risk_pb2 as pb
from ..api.v1 import risk_pb2_grpc as rpc
from .render import table_header, table_row
from .rollback import render

OK, FINDINGS = 0, 1
SCENARIOS = ("healthy", "latency_spike", "error_storm", "accuracy_regression", "sustained_medium_risk")


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the service on a temporary data dir and replay the scenarios")
    demo.add_argument("--scenarios", default="scenarios", metavar="DIR")
    demo.add_argument("--policies", default="policies", metavar="DIR")
    demo.add_argument("--http", default="127.0.0.1:0", metavar="HOST:PORT", help="the dashboard's address")
    demo.add_argument("--keep", action="store_true", help="keep the service (and its dashboard) running until Ctrl-C")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="abguard-demo-") as data_dir:
        flags = Path(data_dir) / "flags.yaml"
        flags.write_text("provider: flagd\nflag_prefix: ff.challenger_\nflagd: {path: flags.flagd.json}\n")
        alertmanager = _start_alertmanager(Path(data_dir))
        command = [
            sys.executable, "-m", "engine", "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
            "--policies", args.policies, "--flags", str(flags), "--http", args.http,
        ]  # fmt: skip
        if alertmanager is not None:
            command += ["--alertmanager", alertmanager[1]]
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
            print(f"decision log: {data_dir}/decisions.sqlite3")
            print(f"risk dashboard: http://{started['http']}/ (live while the demo runs; --keep keeps it)\n")
            with grpc.insecure_channel(started["listen"]) as channel:
                if not _wait_until_serving(channel, 60):
                    print("abguard demo: the service did not become ready", file=sys.stderr)
                    return FINDINGS
                stub = rpc.RiskServiceStub(channel)
                for name in SCENARIOS:
                    _replay(stub, Path(args.scenarios) / f"{name}.jsonl")
                _summary(stub)
                _rollback(stub, Path(data_dir), alertmanager[1] if alertmanager else None)
            print(f"\nrisk dashboard: http://{started['http']}/  (JSON: http://{started['http']}/v1/tests)")
            if args.keep:
                _keep_serving()
        finally:
            if alertmanager is not None:
                alertmanager[0].terminate()
                alertmanager[0].wait(10)
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        logged = sum('"event":"decision"' in event for event in events)
        print(f"\nabguard serve stopped (exit {server.returncode}) after SIGTERM; it logged {logged} decision lines.")
        return OK if server.returncode == 0 else FINDINGS


def _keep_serving() -> None:
    print("the service keeps running; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


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
        line = f"{test_id:24} {status:20} traffic {target:5} {view.decisions} decisions"
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


def _start_alertmanager(data_dir: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """The real Alertmanager on a free port, when the machine has it (Debian: prometheus-alertmanager)."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = data_dir / "alertmanager.yml"
    config.write_text("route: {receiver: nobody}\nreceivers: [{name: nobody}]\n")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={data_dir / 'alertmanager'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.terminate()
    process.wait(10)
    return None


def _rollback(stub: rpc.RiskServiceStub, data_dir: Path, alertmanager: str | None) -> None:
    """Act as the gateway for one rollback, then show its phases, the flag and the alert."""
    record = stub.GetRollback(pb.GetRollbackRequest(test_id="accuracy-regression"), timeout=10)
    print(f"\n== the rollback of accuracy-regression as a tracked process (GetRollback {record.rollback_id[:12]}...)")
    gateway = [s.name for s in record.steps if s.owner == "gateway"]
    for step in gateway:  # the demo plays the gateway: it reports the steps only a gateway can do
        stub.ReportRollbackStep(
            pb.ReportRollbackStepRequest(
                test_id=record.test_id, rollback_id=record.rollback_id, step=step, outcome="done", detail="demo gateway"
            ),
            timeout=10,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # abguard's own steps (flag, alert) run in its outbox
        record = stub.GetRollback(pb.GetRollbackRequest(test_id=record.test_id), timeout=10)
        if record.status == "complete":
            break
        time.sleep(0.2)
    print(render(to_dict(record)))
    if record.HasField("recovery") and record.recovery.status != "successful_recovery":
        print(
            "  (the recorded scenario's gateway kept sending the challenger its users after the rollback: the"
            " user_traffic check fails, and the partial recovery is alerted as AbguardPartialRecovery)"
        )
    flag_file = data_dir / "flags.flagd.json"
    if flag_file.exists():
        flag = json.loads(flag_file.read_text())["flags"].get("ff.challenger_accuracy-regression")
        print(f"\nflag ff.challenger_accuracy-regression in {flag_file.name} (flagd): {json.dumps(flag)}")
    if alertmanager is None:
        print("\nAlertmanager is not installed here (Debian: prometheus-alertmanager): the alerts were not sent.")
        return
    with urllib.request.urlopen(f"{alertmanager}/api/v2/alerts?filter=test_id%3D%22accuracy-regression%22") as reply:
        alerts = json.loads(reply.read())
    print(f"\nalerts Alertmanager holds for accuracy-regression ({alertmanager}/api/v2/alerts):")
    for alert in alerts:
        labels = alert["labels"]
        print(f"  {labels['alertname']:<26} severity={labels['severity']:<9} condition={labels['condition']}")
