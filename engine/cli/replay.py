"""`abguard replay`: decide a JSON-lines stream of snapshots, one decision per input line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import orjson

from ..contract import InputError, OutOfOrderError, parse_snapshot
from ..pipeline import Evaluator
from .common import add_policy_selection, load_policy
from .render import table_header, table_row, to_json

OK, FINDINGS, USAGE = 0, 1, 2


def add_parser(commands: Any) -> None:
    replay = commands.add_parser("replay", help="decide JSON-lines snapshots offline, in event time")
    replay.add_argument("--input", required=True, metavar="FILE", help="JSON lines of snapshots, or - for stdin")
    add_policy_selection(replay)
    replay.add_argument("--format", choices=("jsonl", "table"), default="jsonl")
    replay.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policies, args.profile, args.env)
    if policy is None:
        return FINDINGS
    try:
        source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        print(f"abguard replay: cannot read {args.input}: {error.strerror}", file=sys.stderr)
        return USAGE
    with source:
        return replay(Evaluator(policy), source, sys.stdout, sys.stderr, args.format)


def replay(evaluator: Evaluator, source: IO[str], out: IO[str], err: IO[str], form: str = "jsonl") -> int:
    """Decide every line; report bad lines on `err` with their number and field, keep going."""
    bad = 0
    if form == "table":
        print(table_header(), file=out)
    for number, data in _lines(source):
        try:
            if isinstance(data, _BadJson):
                raise InputError("$", f"invalid JSON: {data.message}")
            decision = evaluator.evaluate(parse_snapshot(data))
        except (InputError, OutOfOrderError) as error:
            bad += 1
            print(f"line {number}: {error}", file=err)
            continue
        except Exception as error:  # a bug of ours: say which line, keep deciding the others
            bad += 1
            print(f"line {number}: internal error: {type(error).__name__}: {str(error)[:200]}", file=err)
            continue
        print(to_json(decision) if form == "jsonl" else table_row(decision), file=out)
    if bad:
        print(f"{bad} line{'s' if bad != 1 else ''} rejected", file=err)
    return FINDINGS if bad else OK


class _BadJson:
    def __init__(self, message: str) -> None:
        self.message = message


def _lines(source: IO[str]) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError:
            try:  # the standard parser reads NaN and Infinity, so the snapshot check can name the field
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, _BadJson(f"{error.msg} at column {error.colno}")
