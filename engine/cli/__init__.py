"""The `abguard` command line: one thin module per verb group."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .common import UsageError

USAGE = 2
# Each verb's module, in help order. Only the verb being run is imported: `serve` does not pay for
# the simulator's scipy or the audit tools at start-up (a restarted replica answers sooner).
VERBS = {
    "policy": "policy",
    "replay": "replay",
    "serve": "serve",
    "evaluate": "serve",
    "health": "serve",
    "demo": "demo",
    "simulate": "simulate",
    "audit": "audit",
    "rollback": "rollback",
    "rollbacks": "rollback",
    "auth": "auth",
}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or only `verb`'s module when it names one (the others stay unimported)."""
    parser = argparse.ArgumentParser(prog="abguard", description="Guard ML model A/B tests with risk policies.")
    parser.add_argument("--version", action="version", version=versions(), help="the package, API and schema versions")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [VERBS[verb]] if verb in VERBS else list(dict.fromkeys(VERBS.values()))
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        add = getattr(module, "add_parsers", None) or module.add_parser
        add(commands)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser(argv[0] if argv else None).parse_known_args(argv)
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


API_VERSION = "abguard.v1"  # the gRPC package (protos/engine/api/v1/risk.proto); its descriptor is protos/released/
POLICY_SCHEMA_VERSION = "abguard/v1"  # the policies' apiVersion (policies/schema/)


def versions() -> str:
    """What `abguard --version` prints: the package, the gRPC and HTTP APIs, the policy schema."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    from ..http.openapi import VERSION as HTTP_VERSION  # noqa: PLC0415

    try:
        package = version("abguard")
    except PackageNotFoundError:
        package = "unknown (not installed)"
    return f"abguard {package}; gRPC API {API_VERSION}; HTTP API {HTTP_VERSION}; policy schema {POLICY_SCHEMA_VERSION}"
