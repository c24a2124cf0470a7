"""gRPC benchmark: `abguard serve` against an echo server with the same messages and setup.

One load client (grpc.aio, CONCURRENCY calls in flight, each slot its own test so
snapshots stay in order) drives each server for DURATION seconds flat out, then at half
of the echo's maximum rate (open loop, fixed schedule). Both servers run as separate
processes on this machine, like the client, so all three share its cores.

    .venv/bin/python bench/bench_grpc.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.api.v1 import risk_pb2 as pb  # noqa: E402
from engine.api.v1 import risk_pb2_grpc as rpc  # noqa: E402

CONCURRENCY = 32
DURATION = 6.0
WARMUP = 1.0
GOAL_RPS, GOAL_P99 = 0.6, 1.5


def requests_for(slot: int, count: int) -> list[pb.EvaluateRequest]:
    """Snapshots of the healthy scenario for test `bench-<slot>`, timestamps moving forward."""
    rows = [json.loads(line) for line in (ROOT / "scenarios" / "healthy.jsonl").read_text().splitlines()]
    base = rows[0]["timestamp"]
    start = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%SZ"))
    out = []
    for index in range(count):
        row = dict(rows[index % len(rows)])
        row["test_id"] = f"bench-{slot}"
        row["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 30 * index))
        out.append(pb.EvaluateRequest(snapshot=json_format.ParseDict(row, pb.Snapshot())))
    return out


async def closed_loop(address: str, seconds: float, per_slot: list[list[pb.EvaluateRequest]]) -> dict[str, float]:
    """Flat out: every slot sends its next call as soon as the last one is answered."""
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.RiskServiceStub(channel)
        deadline = time.perf_counter() + WARMUP + seconds
        measure_from = time.perf_counter() + WARMUP

        async def slot(requests: list[pb.EvaluateRequest]) -> None:
            nonlocal errors
            for request in requests:
                now = time.perf_counter()
                if now > deadline:
                    return
                try:
                    await stub.Evaluate(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(*(slot(requests) for requests in per_slot))
    return _stats(latencies, seconds, errors)


async def open_loop(
    address: str, rate: float, seconds: float, per_slot: list[list[pb.EvaluateRequest]]
) -> dict[str, float]:
    """A fixed schedule of `rate` calls per second spread over the slots, late or not."""
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.RiskServiceStub(channel)
        start = time.perf_counter() + 0.2
        interval = len(per_slot) / rate

        async def slot(index: int, requests: list[pb.EvaluateRequest]) -> None:
            nonlocal errors
            for number, request in enumerate(requests):
                due = start + (index / len(per_slot) + number) * interval
                if due > start + seconds:
                    return
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    await stub.Evaluate(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - due)  # from when it was due: queueing counts

        await asyncio.gather(*(slot(i, requests) for i, requests in enumerate(per_slot)))
    return _stats(latencies, seconds, errors)


def _stats(latencies: list[float], seconds: float, errors: int) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "rps": len(ordered) / seconds,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else float("nan"),
        "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000 if ordered else float("nan"),
        "errors": errors,
    }


def start_echo() -> tuple[subprocess.Popen[bytes], str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_server.py"), str(port_file)])
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return process, f"127.0.0.1:{port_file.read_text()}"
        time.sleep(0.05)
    raise RuntimeError("echo server did not start")


def start_abguard(data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    abguard = str(Path(sys.executable).parent / "abguard")
    log = Path(data_dir) / "serve.log"
    with log.open("w") as out:  # the service logs a JSON line per decision, as in production
        process = subprocess.Popen(
            [abguard, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--policies", str(ROOT / "policies")],
            stdout=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    for _ in range(400):  # the port opens first; calls are answered once the state is rebuilt ("ready")
        events = [json.loads(line) for line in log.read_text().splitlines()]
        if any(event.get("event") == "ready" for event in events):
            return process, events[0]["listen"]
        time.sleep(0.05)
    raise RuntimeError("abguard serve did not become ready")


def stop(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> int:
    calls_per_slot = int(DURATION * 4000 / CONCURRENCY) + 200
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("echo", "abguard"):
        with tempfile.TemporaryDirectory() as data_dir:
            process, address = start_echo() if name == "echo" else start_abguard(data_dir)
            try:
                per_slot = [requests_for(slot, calls_per_slot) for slot in range(CONCURRENCY)]
                results[name] = {"max": asyncio.run(closed_loop(address, DURATION, per_slot))}
            finally:
                stop(process)
    half = results["echo"]["max"]["rps"] / 2
    # also at half of abguard's own maximum: its latency when it is not saturated
    light = results["abguard"]["max"]["rps"] / 2
    for name in ("echo", "abguard"):
        for label, rate in (("half", half), ("light", light)):
            with tempfile.TemporaryDirectory() as data_dir:
                process, address = start_echo() if name == "echo" else start_abguard(data_dir)
                try:
                    per_slot = [requests_for(slot, calls_per_slot) for slot in range(CONCURRENCY)]
                    results[name][label] = asyncio.run(open_loop(address, rate, DURATION, per_slot))
                finally:
                    stop(process)

    print(
        f"gRPC benchmark: {CONCURRENCY} calls in flight (grpc.aio), {DURATION:g} s per run, "
        f"client and servers share {os.cpu_count()} cores"
    )
    print(
        f"{'':10}{'max rps':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
        f"  | at {half:>5.0f} rps: p50 {'':>4}p99  | at {light:>5.0f} rps: p50 {'':>4}p99"
    )
    for name in ("echo", "abguard"):
        m, h, low = results[name]["max"], results[name]["half"], results[name]["light"]
        print(
            f"{name:10}{m['rps']:>9.0f}{m['p50_ms']:>8.2f}{m['p99_ms']:>8.2f}{m['errors']:>7.0f}"
            f"  | {'':>13}{h['p50_ms']:>7.2f}{h['p99_ms']:>8.2f}  | {'':>13}{low['p50_ms']:>7.2f}{low['p99_ms']:>8.2f}"
        )
    rps_ratio = results["abguard"]["max"]["rps"] / results["echo"]["max"]["rps"]
    p99_ratio = results["abguard"]["half"]["p99_ms"] / results["echo"]["half"]["p99_ms"]
    print(f"Evaluate/echo max rps: {rps_ratio:.2f} (goal >= {GOAL_RPS})")
    light_ratio = results["abguard"]["light"]["p99_ms"] / results["echo"]["light"]["p99_ms"]
    print(f"Evaluate/echo p99 at half the echo's max: {p99_ratio:.2f} (goal <= {GOAL_P99})")
    print(f"Evaluate/echo p99 at half abguard's own max: {light_ratio:.2f} (for orientation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
