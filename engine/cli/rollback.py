"""`abguard rollback TEST --reason` and `abguard rollbacks`: a manual rollback, and the state of
rollbacks, from a running server (RollbackTest, GetRollback, ListRollbacks)."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from typing import Any

import grpc

from ..api.convert import to_dict
from ..api.v1 import risk_pb2 as pb
from ..api.v1 import risk_pb2_grpc as rpc
from .client import add_connection_options, failure, open_channel
from .common import env_default

OK, FINDINGS, USAGE = 0, 1, 2


def add_parsers(commands: Any) -> None:
    manual = commands.add_parser("rollback", help="roll a test back by hand through a running server")
    manual.add_argument("test_id", metavar="TEST")
    manual.add_argument("--reason", required=True, help="why (recorded with the rollback)")
    manual.add_argument("--by", default=None, help="who asks (default: user@host; recorded)")
    _server_options(manual)
    manual.set_defaults(run=run_rollback)
    listing = commands.add_parser("rollbacks", help="rollbacks, their phases and steps, from a running server")
    listing.add_argument("--test", default="", metavar="TEST", help="one test (default: all tests)")
    listing.add_argument("--limit", type=int, default=20)
    _server_options(listing)
    listing.set_defaults(run=run_rollbacks)


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=env_default("SERVER", "127.0.0.1:50051"), metavar="ADDR")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    add_connection_options(parser)


def run_rollback(args: argparse.Namespace) -> int:
    who = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    request = pb.RollbackTestRequest(test_id=args.test_id, reason=args.reason, requested_by=who)
    return _call(args, "rollback", lambda stub: [stub.RollbackTest(request, timeout=args.timeout)])


def run_rollbacks(args: argparse.Namespace) -> int:
    request = pb.ListRollbacksRequest(test_id=args.test, page_size=args.limit)
    return _call(args, "rollbacks", lambda stub: list(stub.ListRollbacks(request, timeout=args.timeout).rollbacks))


def _call(args: argparse.Namespace, verb: str, ask: Any) -> int:
    try:
        with open_channel(args) as channel:
            records = [to_dict(message) for message in ask(rpc.RiskServiceStub(channel))]
    except grpc.RpcError as error:
        code = error.code()
        print(f"abguard {verb}: {args.server}: {failure(args, error)}", file=sys.stderr)
        return USAGE if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND) else FINDINGS
    if args.format == "json":
        print(json.dumps(records, indent=2))
    else:
        for record in records:
            print(render(record))
    return OK


def render(record: dict[str, Any]) -> str:
    """A rollback as a person reads it: what, why, who, each phase and step."""
    recovery = record.get("recovery")
    lines = [
        f"rollback {record['rollback_id']} of {record['test_id']}: {record['status']}",
        f"  decided {record['decided_at']} ({record['trigger']}, by {record['requested_by']}):"
        f" {record['reason'][:160]}",
    ]
    for phase in record.get("phases", []):
        lines.append(f"  {phase['name']:<16} {phase['state']:<14} deadline {phase['deadline']}")
        for step in record.get("steps", []):
            if step["phase"] == phase["name"]:
                detail = f"  {step['detail'][:80]}" if step.get("detail") else ""
                lines.append(f"    {step['name']:<21} {step['owner']:<8} {step['state']:<8}{detail}")
    if recovery:
        seconds = recovery.get("recovery_seconds")
        took = f", all checks passed after {seconds:g} s" if seconds is not None else ""
        short = [f"{c['name']} {c['score']:.2f}" for c in recovery.get("checks", []) if c["score"] < 1.0]
        below = f"; below 1: {', '.join(short)}" if short else ""
        lines.append(f"  recovery: {recovery['status']} (score {recovery['score']:.2f}{took}{below})")
    return "\n".join(lines)
