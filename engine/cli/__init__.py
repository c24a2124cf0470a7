"""The `abguard` command line: one thin module per verb group."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import demo, policy, replay, serve

USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abguard", description="Guard ML model A/B tests with risk policies.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    policy.add_parser(commands)
    replay.add_parser(commands)
    serve.add_parsers(commands)
    demo.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
