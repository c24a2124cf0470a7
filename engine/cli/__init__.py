"""The `abguard` command line: one thin module per verb group."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import audit, demo, policy, replay, rollback, serve, simulate
from .common import UsageError

USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abguard", description="Guard ML model A/B tests with risk policies.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    policy.add_parser(commands)
    replay.add_parser(commands)
    serve.add_parsers(commands)
    demo.add_parser(commands)
    simulate.add_parser(commands)
    audit.add_parser(commands)
    rollback.add_parsers(commands)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each parser stores itself as `cli_parser`: the deepest one reached is the verb's, which reports its errors."""
    parser.set_defaults(cli_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _remember_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    verb: argparse.ArgumentParser = args.cli_parser
    if unknown:
        verb.error(f"unrecognized arguments: {' '.join(unknown)}")  # the verb's usage line, exit 2
    try:
        return int(args.run(args))
    except UsageError as error:
        print(f"{verb.prog}: {error}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
