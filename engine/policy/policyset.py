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
from .overlay import merge
from .validate import _schema_diagnostic, _validator, check_document, check_effective

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
    if found.base is None:
        return None, None, [Diagnostic("policies", 0, "$", "policy-missing", "no document of kind RiskPolicy found")]
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
    if any(document.file in found.invalid for document in used):
        return None, None, [d for d in found.diagnostics if d.file in {doc.file for doc in used}]
    merged, problems = merge(found.base, overlays)
    schema_errors = [_schema_diagnostic(merged.base, e) for e in _validator("RiskPolicy").iter_errors(merged.data)]
    problems += (
        [merged.diagnostic(_path_of(d), d.code, d.message) for d in schema_errors] if overlays else schema_errors
    )
    if not problems:
        problems += check_effective(merged)
    if problems:
        return None, merged.data, unique_sorted(problems)
    policy = build_policy(merged.data, digest(merged.data), profile, environment)
    return policy, merged.data, []


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
        profile = None
    policy, _, problems = effective(found, profile, environment)
    if policy is None:
        raise PolicyError(problems)
    return policy
