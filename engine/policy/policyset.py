"""A directory of policy documents: the base RiskPolicy, its profiles and environments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .compiler import compile_policy
from .diagnostics import Diagnostic, unique_sorted
from .digest import digest
from .documents import Document, discover, read_file
from .model import Policy, build_policy
from .overlay import Merged, merge
from .validate import _schema_diagnostic, _validator, check_document, check_effective, unreadable

DEFAULT_PROFILE = "balanced"

# Registers a compiled ruleset; injected so this module stays free of durable_rules.
Registrar = Callable[[Policy, dict[str, Any]], None]


class PolicyError(Exception):
    """The policy set cannot give an effective policy; `diagnostics` say why."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(d.text() for d in diagnostics))
        self.diagnostics = diagnostics


@dataclass
class PolicySet:
    base: Document | None = None
    profiles: dict[str, Document] = field(default_factory=dict)
    environments: dict[str, Document] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # files with schema errors


def load_set(paths: list[str]) -> PolicySet:
    found = PolicySet()
    files = discover(paths)
    if not files:
        found.diagnostics.append(Diagnostic(", ".join(paths), 0, "$", "no-policies", "no YAML policy files found"))
    for file in files:
        document, problems = read_file(file)
        found.diagnostics += problems
        if document is None or problems:
            found.invalid.add(file)
        if document is None:
            continue
        schema_problems = check_document(document)
        found.diagnostics += schema_problems
        if schema_problems:
            found.invalid.add(file)
        _place(found, document)
    return found


def _place(found: PolicySet, document: Document) -> None:
    kind, name = document.kind, document.name or document.file
    if kind == "RiskPolicy":
        if found.base is not None:
            found.diagnostics.append(
                document.diagnostic(
                    ("kind",), "policy-duplicate", f"a second RiskPolicy; the first is {found.base.file}"
                )
            )
            return
        found.base = document
    elif kind in ("Profile", "Environment"):
        table = found.profiles if kind == "Profile" else found.environments
        if name in table:
            found.diagnostics.append(
                document.diagnostic(
                    ("metadata", "name"), "overlay-duplicate", f"{kind} '{name}' is also defined in {table[name].file}"
                )
            )
            return
        table[name] = document


def effective(
    found: PolicySet, profile: str | None, environment: str | None
) -> tuple[Policy | None, dict[str, Any] | None, list[Diagnostic]]:
    """Merge base + profile + environment; the typed policy only when nothing is wrong."""
    problems: list[Diagnostic] = []
    if found.base is None:  # a file that could not be read may be the RiskPolicy: say why it could not
        missing = Diagnostic("policies", 0, "$", "policy-missing", "no document of kind RiskPolicy found")
        return None, None, unique_sorted([*_unread(found), missing])
    overlays: list[Document] = []
    for label, name, table in (("profile", profile, found.profiles), ("environment", environment, found.environments)):
        if name is None:
            continue
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            problems.append(
                Diagnostic(found.base.file, 0, "$", f"unknown-{label}", f"no {label} '{name}' (known: {known})")
            )
        else:
            overlays.append(table[name])
    if problems:
        return None, None, problems
    used = [found.base, *overlays]
    files = {document.file for document in used}
    merged, merge_problems = merge(found.base, overlays)
    schema_errors = list(_validator("RiskPolicy").iter_errors(merged.data))
    if any(document.file in found.invalid for document in used):
        # each file's own errors say it; the merged data's schema errors would only repeat them
        problems = [d for d in found.diagnostics if d.file in files]
        said = {(d.file, d.path) for d in problems}
        problems += [d for d in merge_problems if (d.file, d.path) not in said]
    else:
        located = [_schema_diagnostic(merged.base, e) for e in schema_errors]
        problems = merge_problems + (
            [merged.diagnostic(_path_of(d), d.code, d.message) for d in located] if overlays else located
        )
    # the later stages check every part the errors so far leave readable, so all are reported in one run
    rejected = [path for d in found.diagnostics if d.code in _READ_CODES for path in _merged_paths(merged, d)]
    skip = unreadable(merged.data, schema_errors, [*rejected, *merged.reshaped])
    # an overlay key aimed at a part the base lacks or broke is that error's consequence, not another one
    problems = [d for d in problems if d not in merged.missed or skip.readable(merged.missed[d])]
    problems += check_effective(merged, skip)
    if problems:
        return None, merged.data, unique_sorted(problems)
    policy = build_policy(merged.data, digest(merged.data), profile, environment)
    return policy, merged.data, []


def _unread(found: PolicySet) -> list[Diagnostic]:
    """Why files gave no document at all (unreadable, not YAML, refused while reading): their kind is unknown."""
    return [d for d in found.diagnostics if d.code in _UNREAD_CODES]


_UNREAD_CODES = frozenset(
    {"file-unreadable", "yaml-syntax", "yaml-empty", "yaml-alias-cycle", "yaml-too-deep", "yaml-too-large"}
)
# Read-stage findings about a value that is there but cannot be trusted.
_READ_CODES = frozenset({"yaml-duplicate-key"})


def _merged_paths(merged: Merged, diagnostic: Diagnostic) -> list[tuple[str | int, ...]]:
    """Where a finding in one of the merged documents lands in the merged data."""
    own = _path_of(diagnostic)
    found = [own] if diagnostic.file == merged.base.file else []
    for path, (document, origin) in merged.origin.items():
        if document.file != diagnostic.file:
            continue
        if own[: len(origin)] == origin:
            found.append(path + own[len(origin) :])
        elif origin[: len(own)] == own:
            found.append(path)
    return found


def _path_of(diagnostic: Diagnostic) -> tuple[str | int, ...]:
    """Back from the printed path to parts, to re-locate a merged-data error in its overlay."""
    parts: list[str | int] = []
    for piece in diagnostic.path.replace("]", "").replace("[", ".").split("."):
        if piece and piece != "$":
            parts.append(int(piece) if piece.isdigit() else piece)
    return tuple(parts)


def validate_set(found: PolicySet, register: Registrar | None = None) -> list[Diagnostic]:
    """Every problem in the set: each document, and every profile x environment combination."""
    problems = list(found.diagnostics)
    if found.base is None:
        if not found.profiles and not found.environments:
            return unique_sorted(problems)
        # overlays alone can only be checked against their schema
        return unique_sorted(problems)
    profiles: list[str | None] = [None, *found.profiles]
    environments: list[str | None] = [None, *found.environments]
    for profile in profiles:
        for environment in environments:
            policy, _, found_problems = effective(found, profile, environment)
            problems += found_problems
            if policy is not None and register is not None:
                try:
                    register(policy, compile_policy(policy))
                except Exception as error:  # the rule engine's refusal, whatever its type
                    problems.append(
                        Diagnostic(
                            found.base.file,
                            0,
                            "$",
                            "ruleset-rejected",
                            f"durable_rules refused the compiled ruleset: {error}",
                        )
                    )
    return unique_sorted(problems)


def load_effective(paths: list[str], profile: str | None = DEFAULT_PROFILE, environment: str | None = None) -> Policy:
    found = load_set(paths)
    if profile == DEFAULT_PROFILE and DEFAULT_PROFILE not in found.profiles:
        unread = _unread(found)
        if unread:  # one of them may be the default profile: deciding without it would be another policy
            raise PolicyError(unread)
        profile = None
    policy, _, problems = effective(found, profile, environment)
    if policy is None:
        raise PolicyError(problems)
    return policy
