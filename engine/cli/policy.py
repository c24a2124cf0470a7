"""`abguard policy ...`: validate, show, diff, compile, facts, actions, schema."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .. import policytest
from ..facts import sequential_plan
from ..policy import Policy
from ..policy import schema as schemas
from ..policy.catalog import ACTIONS, FACTS
from ..policy.compiler import compile_policy
from ..policy.diff import diff
from ..policy.documents import read_revision
from ..policy.policyset import effective, load_set, validate_set
from ..rules.durable_adapter import dumps
from ..rules.registry import register
from .common import UsageError, add_policy_selection, require_policies

OK, FINDINGS, USAGE = 0, 1, 2
DEFAULT_PATH = "policies"


def add_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="validate, show, diff and compile policies")
    verbs = policy.add_subparsers(dest="verb", required=True, metavar="VERB")

    validate = verbs.add_parser("validate", help="report every error in the policies, with file:line")
    validate.add_argument("paths", nargs="*", default=[DEFAULT_PATH], metavar="PATH")
    _format(validate, ("text", "json"))
    validate.set_defaults(run=run_validate)

    for name, run, formats, help_text in (
        ("show", run_show, ("yaml", "json"), "print the effective policy with its digest"),
        ("compile", run_compile, ("json",), "print the durable_rules ruleset of the effective policy"),
    ):
        verb = verbs.add_parser(name, help=help_text)
        add_policy_selection(verb)
        _format(verb, formats)
        verb.set_defaults(run=run)

    differ = verbs.add_parser("diff", help="field-by-field diff; threshold changes judged stricter or looser")
    differ.add_argument("old", metavar="OLD", help="a file, or REV:path read with git")
    differ.add_argument("new", metavar="NEW", help="a file, or REV:path read with git")
    _format(differ, ("text", "json"))
    differ.set_defaults(run=run_diff)

    tester = verbs.add_parser("test", help="run the policy test cases (snapshots in, decisions out)")
    tester.add_argument("paths", nargs="*", default=["policies/tests"], metavar="PATH")
    tester.add_argument("--policies", default=DEFAULT_PATH, metavar="DIR", help="policy folder (default: policies)")
    tester.set_defaults(run=run_test)

    facts = verbs.add_parser("facts", help="the fact names `when` expressions may use")
    _format(facts, ("text", "json"))
    facts.set_defaults(run=run_facts)

    actions = verbs.add_parser("actions", help="the named actions a condition may ask for")
    _format(actions, ("text", "json"))
    actions.set_defaults(run=run_actions)

    schema = verbs.add_parser("schema", help="print the JSON Schemas, or --write them to a folder")
    schema.add_argument("--write", metavar="DIR", help="write the schema files here (e.g. policies/schema)")
    schema.add_argument("--check", metavar="DIR", help="exit 1 if the files in DIR are not current")
    schema.set_defaults(run=run_schema)


def _format(parser: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    parser.add_argument("--format", choices=choices, default=choices[0])


def _register(policy: Any, ruleset: dict[str, Any]) -> None:
    register(policy, ruleset)


def run_validate(args: argparse.Namespace) -> int:
    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        print(f"abguard policy validate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return USAGE
    found = load_set(args.paths)
    problems = validate_set(found, register=_register)
    if args.format == "json":
        print(json.dumps({"valid": not problems, "errors": [d.as_dict() for d in problems]}, indent=2))
    else:
        for problem in problems:
            print(problem.text())
        if problems:
            sys.stdout.flush()
            print(f"{len(problems)} error{'s' if len(problems) != 1 else ''}", file=sys.stderr)
    return FINDINGS if problems else OK


def _effective(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    require_policies(args.policies)
    found = load_set([args.policies])
    profile = None if args.profile in (None, "none") else args.profile
    policy, data, problems = effective(found, profile, args.env)
    if policy is None:
        for problem in problems or found.diagnostics:
            print(problem.text(), file=sys.stderr)
        return None, None
    return policy, data


def run_show(args: argparse.Namespace) -> int:
    policy, data = _effective(args)
    if policy is None or data is None:
        return FINDINGS
    document = {
        "apiVersion": "abguard/v1",
        "kind": "EffectivePolicy",
        "metadata": {
            "name": policy.name,
            "version": policy.version,
            "digest": policy.digest,
            "profile": policy.profile,
            "environment": policy.environment,
        },
        "spec": data["spec"],
        "guarantees": guarantees(policy),
    }
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False, width=120), end="")
    return OK


def guarantees(policy: Policy) -> dict[str, Any]:
    """What the policy's sequential statistics promise, derived from it: shown, never edited."""
    statistics, conditions = policy.statistics, {c.name: c for c in policy.conditions}
    rows = []
    for planned in sequential_plan(policy):
        comparison = planned.spec.build(conditions[planned.condition], planned.boundary, statistics.batch_seconds)
        settings = comparison.settings
        rows.append(
            {
                "statistic": planned.stem,
                "components": planned.spec.components,
                "healthy_up_to": round(comparison.shown(settings.null), 6),
                "tuned_to_catch": round(comparison.shown(settings.alternative), 6),
                "alarm_at_nats": round(planned.boundary.enter, 3),
                "clears_below_nats": round(planned.boundary.exit, 3),
            }
        )
    return {
        "promise": (
            f"on healthy arms the {len(rows)} sequential statistics together enter at most "
            f"{statistics.false_alarms_per_test_day:g} false alarms per test-day, expected, however often a test is "
            f"evaluated, and for any true effect no worse than each statistic's healthy_up_to; each is tuned "
            f"to catch the effect tuned_to_catch (docs/statistics.md)"
        ),
        "false_alarms_per_test_day": statistics.false_alarms_per_test_day,
        "batch_seconds": statistics.batch_seconds,
        "statistics": rows,
    }


def run_compile(args: argparse.Namespace) -> int:
    policy, _ = _effective(args)
    if policy is None:
        return FINDINGS
    # the exact text durable_rules registers: positional numbers, no exponents
    print(json.dumps(json.loads(dumps(compile_policy(policy))), indent=2))
    return OK


def run_diff(args: argparse.Namespace) -> int:
    sides = []
    for spec in (args.old, args.new):
        document, problems = read_revision(spec)
        if document is None:
            for problem in problems:
                print(problem.text(), file=sys.stderr)
            return USAGE
        sides.append(document.data)
    changes = diff(sides[0], sides[1])
    if args.format == "json":
        print(json.dumps({"changed": bool(changes), "changes": [c.as_dict() for c in changes]}, indent=2))
    elif changes:
        rows = [("PATH", "OLD", "NEW", "EFFECT")] + [(c.path, _cell(c.old), _cell(c.new), c.effect) for c in changes]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    else:
        print("no changes")
    return FINDINGS if changes else OK


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_test(args: argparse.Namespace) -> int:
    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    require_policies(args.policies)
    files = policytest.discover(args.paths)
    if not files:
        raise UsageError(f"no policy test files under {', '.join(args.paths)}")
    results, broken = [], 0
    for file in files:
        try:
            results += policytest.run_file(file, args.policies)
        except policytest.CaseFileError as error:  # one line each; the other files still run
            print(error, file=sys.stderr)
            broken += 1
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.file}: {result.name} ({result.decisions} decisions)")
        for failure in result.failures:
            print(f"      {failure}")
    failed = sum(not r.passed for r in results)
    if results:
        not_run = f", {broken} file{'s' if broken != 1 else ''} not run" if broken else ""
        print(f"{len(results) - failed} passed, {failed} failed{not_run}")
    return FINDINGS if failed or broken else OK


def run_facts(args: argparse.Namespace) -> int:
    if args.format == "json":
        print(
            json.dumps(
                [{"name": f.name, "unit": f.unit, "description": f.description} for f in FACTS.values()], indent=2
            )
        )
        return OK
    width = max(len(name) for name in FACTS)
    for fact in FACTS.values():
        print(f"{fact.name.ljust(width)}  {fact.unit:<12}  {fact.description}")
    return OK


def run_actions(args: argparse.Namespace) -> int:
    if args.format == "json":
        rows = [
            {"name": a.name, "params": a.params, "required": list(a.required), "description": a.description}
            for a in ACTIONS.values()
        ]
        print(json.dumps(rows, indent=2))
        return OK
    for action in ACTIONS.values():
        params = ", ".join(f"{k}{'' if k in action.required else '?'}: {t}" for k, t in action.params.items())
        print(f"{action.name:<20}  {{{params}}}  {action.description}")
    return OK


def schema_texts() -> dict[str, str]:
    return {file: json.dumps(schemas.build(kind), indent=2) + "\n" for kind, file in schemas.SCHEMA_FILES.items()}


def run_schema(args: argparse.Namespace) -> int:
    texts = schema_texts()
    if args.check:
        stale = [
            f
            for f, text in texts.items()
            if not (Path(args.check) / f).exists() or (Path(args.check) / f).read_text() != text
        ]
        for file in stale:
            print(
                f"{Path(args.check) / file} is out of date: run `abguard policy schema --write {args.check}`",
                file=sys.stderr,
            )
        return FINDINGS if stale else OK
    if args.write:
        folder = Path(args.write)
        folder.mkdir(parents=True, exist_ok=True)
        for file, text in texts.items():
            (folder / file).write_text(text)
        return OK
    print(json.dumps({kind: schemas.build(kind) for kind in schemas.SCHEMA_FILES}, indent=2))
    return OK
