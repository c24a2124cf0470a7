"""The gRPC floor: the same service, messages and server setup as `abguard serve`, with an
Evaluate that answers a canned decision without deciding anything.

    python bench/echo_server.py PORT_FILE    # writes the bound port to PORT_FILE, serves until SIGTERM
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.api.convert import fill  # noqa: E402
from engine.api.v1 import risk_pb2 as pb  # noqa: E402
from engine.api.v1 import risk_pb2_grpc as rpc  # noqa: E402
from engine.contract import parse_snapshot  # noqa: E402
from engine.pipeline import Evaluator  # noqa: E402
from engine.policy import load_effective  # noqa: E402


class Echo(rpc.RiskServiceServicer):  # type: ignore[misc]
    def __init__(self, reply: pb.EvaluateResponse) -> None:
        self.reply = reply

    def Evaluate(self, request: pb.EvaluateRequest, context: grpc.ServicerContext) -> pb.EvaluateResponse:
        return self.reply


def canned_reply() -> pb.EvaluateResponse:
    """A real decision (so the response is as large as abguard's), computed once."""
    row = json.loads((ROOT / "scenarios" / "sustained_medium_risk.jsonl").read_text().splitlines()[60])
    evaluator = Evaluator(load_effective([str(ROOT / "policies")]))
    decision = evaluator.evaluate(parse_snapshot(row))
    reply = pb.EvaluateResponse()
    fill(reply.decision, decision.to_dict())
    return reply


def main() -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="echo-rpc"),
        options=[("grpc.so_reuseport", 0), ("grpc.max_connection_age_ms", 300_000)],
    )
    rpc.add_RiskServiceServicer_to_server(Echo(canned_reply()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(sys.argv[1]).write_text(str(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(2).wait()


if __name__ == "__main__":
    main()
