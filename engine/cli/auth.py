"""`abguard auth token` issues a static bearer token; `abguard auth check` validates an auth file.

The token is printed once and never stored: the auth file keeps only its SHA-256, so the file can
be reviewed, committed to a private repository or mounted as a ConfigMap without handing out access.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..security.config import AuthFileError, load_auth
from ..security.identity import new_token, token_hash
from ..security.roles import ROLES

OK, FINDINGS = 0, 1


def add_parser(commands: Any) -> None:
    auth = commands.add_parser("auth", help="issue bearer tokens, check an auth file (serve --auth)")
    verbs = auth.add_subparsers(dest="auth_command", required=True, metavar="VERB")
    token = verbs.add_parser("token", help="a new random token and the auth-file entry that grants it roles")
    token.add_argument("--name", required=True, help="the identity recorded with what the token's holder does")
    token.add_argument(
        "--role", action="append", required=True, choices=sorted(ROLES), dest="roles",
        help="a role the token grants (repeat for several)",
    )  # fmt: skip
    token.set_defaults(run=run_token)
    check = verbs.add_parser("check", help="validate an auth file; exit 1 naming every problem")
    check.add_argument("file")
    check.set_defaults(run=run_check)


def run_token(args: argparse.Namespace) -> int:
    token = new_token()
    entry = {"name": args.name, "sha256": token_hash(token), "roles": sorted(set(args.roles))}
    print(token)  # stdout holds only the token, for scripts; it is shown this once
    print(f"# give the token above to {args.name}; add this under `tokens:` in the auth file:", file=sys.stderr)
    print(f"  - {json.dumps(entry)}", file=sys.stderr)
    return OK


def run_check(args: argparse.Namespace) -> int:
    try:
        config = load_auth(args.file)
    except AuthFileError as error:
        print(f"abguard auth check: {error}", file=sys.stderr)
        return FINDINGS
    print(f"{args.file}: {json.dumps({**config.summary, 'open': sorted(config.open)})}")
    return OK
