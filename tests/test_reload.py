"""Safe policy reload on a real `abguard serve`: SIGHUP or a changed folder swaps a good policy in
between evaluations; a broken one, or one failing its own tests, is refused and the last good stays."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format

from engine.api.convert import to_dict
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parent.parent
START = 1_795_000_000  # 2026-11-18, the first snapshot's time


class Served:
    def __init__(self, tmp: Path) -> None:
        self.policies = tmp / "policies"
        shutil.copytree(ROOT / "policies", self.policies)
        shutil.copytree(ROOT / "scenarios", tmp / "scenarios")  # the policy's own test cases read these
        command = [
            str(Path(sys.executable).parent / "abguard"), "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(tmp / "data"), "--policies", str(self.policies), "--http", "127.0.0.1:0",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        self.started = json.loads(self.process.stdout.readline())
        self.lines: list[str] = []  # read all along: a full pipe would block the service's logging
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.channel = grpc.insecure_channel(self.started["listen"])
        self.stub = rpc.RiskServiceStub(self.channel)
        self.rows = [json.loads(line) for line in (ROOT / "scenarios" / "healthy.jsonl").read_text().splitlines()]
        self.sent = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def policy(self) -> pb.GetPolicyResponse:
        answer: pb.GetPolicyResponse = self.stub.GetPolicy(pb.GetPolicyRequest(), timeout=10)
        return answer

    def evaluate(self) -> dict[str, Any]:
        row = self.rows[self.sent % len(self.rows)]
        self.sent += 1  # past the scenario's end: its rows again, time still moving on by 30 s a snapshot
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + 30 * self.sent))
        request = pb.EvaluateRequest(snapshot=json_format.ParseDict({**row, "timestamp": stamp}, pb.Snapshot()))
        return to_dict(self.stub.Evaluate(request, timeout=10).decision)

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        path = self.policies / "default.yaml"
        document = yaml.safe_load(path.read_text())
        change(document)
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    def wait(self, done: Callable[[pb.GetPolicyResponse], bool], what: str) -> pb.GetPolicyResponse:
        deadline = time.monotonic() + 60
        while True:
            answer = self.policy()
            if done(answer):
                return answer
            assert time.monotonic() < deadline, f"no {what} within 60 s: {answer}"
            time.sleep(0.2)

    def stop(self) -> str:
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.reader.join(10)
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        assert self.process.returncode == 0, err
        return "".join(self.lines)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = Served(tmp_path)
    yield running
    if running.process.poll() is None:
        running.stop()


def bump(version: int, threshold: float) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["metadata"]["version"] = version
        document["spec"]["conditions"]["error_rate"]["thresholds"]["error_rate_threshold"] = threshold

    return change


def test_sighup_swaps_in_a_good_policy_and_decisions_name_it(served: Served) -> None:
    first = served.policy()
    assert first.policy.version == 1 and not first.HasField("rejected") and first.loaded_at
    assert served.evaluate()["policy"]["digest"] == first.policy.digest
    served.edit(bump(2, 0.06))
    served.process.send_signal(signal.SIGHUP)
    now = served.wait(lambda answer: answer.policy.version == 2, "reload")
    assert now.policy.digest != first.policy.digest and not now.HasField("rejected")
    assert served.evaluate()["policy"] == {"name": "default", "version": 2, "digest": now.policy.digest}
    events = [json.loads(line)["event"] for line in served.stop().splitlines()]
    assert "policy_reloaded" in events


def test_a_broken_policy_is_refused_and_the_last_good_one_keeps_deciding(served: Served) -> None:
    """The folder changes to an expression that does not parse: refused (no SIGHUP needed), named in
    GetPolicy, and every decision still comes from the policy in force."""
    good = served.policy()

    def broken(document: dict[str, Any]) -> None:
        document["spec"]["conditions"]["error_rate"]["indicators"][0]["when"] = "errors.rate > > 1"

    served.edit(broken)
    answer = served.wait(lambda answer: answer.HasField("rejected"), "refusal")
    assert answer.policy.digest == good.policy.digest
    assert answer.rejected.source == "folder_changed"
    assert (
        "spec.conditions.error_rate.indicators[0].when" in answer.rejected.why
        and "[expr-syntax]" in answer.rejected.why
    )
    assert answer.rejected.digest.startswith("sha256:") and answer.rejected.digest != good.policy.digest
    assert served.evaluate()["policy"]["digest"] == good.policy.digest
    with urllib.request.urlopen(f"http://{served.started['http']}/v1/policy", timeout=10) as reply:
        over_http = json.loads(reply.read())
    assert over_http["policy"]["digest"] == good.policy.digest
    assert over_http["rejected"] == {
        "digest": answer.rejected.digest, "why": answer.rejected.why,
        "rejected_at": answer.rejected.rejected_at, "source": "folder_changed",
    }  # fmt: skip
    shutil.copy(ROOT / "policies" / "default.yaml", served.policies / "default.yaml")
    served.edit(bump(3, 0.06))  # fixed: the next change is taken
    fixed = served.wait(lambda answer: answer.policy.version == 3, "reload after the fix")
    assert not fixed.HasField("rejected")


def test_a_policy_failing_its_own_tests_is_refused(served: Served) -> None:
    """Valid, but healthy traffic would be cut back: the policy's test cases fail in the child, so it is refused."""
    good = served.policy()

    def strict(document: dict[str, Any]) -> None:
        document["metadata"]["version"] = 9
        document["spec"]["conditions"]["error_rate"]["thresholds"]["error_rate_threshold"] = 0.0
        document["spec"]["conditions"]["error_rate"]["thresholds"]["critical_error_rate"] = 0.0

    served.edit(strict)
    served.process.send_signal(signal.SIGHUP)
    answer = served.wait(lambda answer: answer.HasField("rejected"), "refusal")
    assert answer.policy.digest == good.policy.digest
    assert "policy test failed" in answer.rejected.why


def test_evaluations_during_reloads_never_fail(served: Served) -> None:
    """A client evaluates without pause while the policy is swapped back and forth five times."""
    errors: list[str] = []
    digests: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                digests.add(served.evaluate()["policy"]["digest"])
            except grpc.RpcError as error:
                errors.append(f"{error.code().name}: {error.details()}")

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for version in range(2, 7):
            served.edit(bump(version, 0.05 + version / 1000))
            served.process.send_signal(signal.SIGHUP)
            served.wait(lambda answer, v=version: answer.policy.version == v, f"version {version}")  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    assert len(digests) >= 3  # decisions came from several of the policies swapped in
